//! README's first command, `scripts/demo.sh`, runs `scripts/demo-steps.sh` inside a lab per backend: this
//! runs the same steps with the test build, so the demo keeps working.

use crate::common;

use std::path::Path;

use common::{ok, virtzone_binary, Backend, Lab, LabConfig, Release};

#[test]
fn the_demo_walks_through_the_product() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for backend in [Backend::Nftables, Backend::Iptables] {
        let lab = Lab::start(LabConfig {
            bus_policies: vec![repo.join("dbus/org.virtzone.VirtZone1.conf")],
            ..LabConfig::new(Release::Debian12, backend)
        });
        let bin_dir = virtzone_binary()
            .parent()
            .expect("binary directory")
            .to_path_buf();
        let out = lab
            .command("bash")
            .arg(repo.join("scripts/demo-steps.sh"))
            .env("LAB_DIR", lab.dir())
            .env("VIRTZONE_BIN_DIR", bin_dir)
            .output()
            .expect("run the demo");
        let shown = ok(&out);
        let expected_check = match backend {
            Backend::Nftables => "uses the nftables backend and has no libvirt zone",
            Backend::Iptables => "works through libvirt's own iptables rules",
        };
        for part in [
            expected_check,
            "reloaded firewalld: the zones are live",
            "bridge virbr1 of network routed gets zone libvirt-routed",
            "zone libvirt: already present (installed by virtzone), kept as it is; it differs from virtzone's: extra service http",
            "bound bridge virbr0 to zone libvirt",
            "bound bridge virbr1 to zone libvirt-routed",
            "unbound bridge virbr1 from zone libvirt-routed",
        ] {
            let all = format!("{shown}{}", common::text(&out.stderr));
            assert!(all.contains(part), "{backend:?}: the demo should show {part:?}:\n{all}");
        }
        // After the reload, the daemon had put virbr0 back.
        let after_reload = shown.split("firewalld reloads").nth(1).unwrap_or("");
        assert!(
            after_reload.contains("$ firewall-cmd --get-zone-of-interface=virbr0\nlibvirt\n"),
            "{backend:?}:\n{shown}"
        );
        // The demo polls for the daemon's reconcile; a wait that ran out says so on stderr.
        let errors = common::text(&out.stderr);
        assert!(!errors.contains("timed out"), "{backend:?}:\n{errors}");
    }
}
