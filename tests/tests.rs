//! The integration suite, as one test binary: every module runs against real components (a private
//! dbus-daemon, real firewalld releases, real libvirtd, network namespaces, bridges and packets), built
//! by the lab in [`common`]. One binary compiles the lab once and lets the compiler see which of its
//! parts are used.

// The lab: private bus, real firewalld releases, libvirtd, namespaces, `lab_matrix!`, helpers.
mod common;

/// Issue #22: desired state in drop-in files, `virtzone apply`, ownership, and the Ansible module.
mod apply;
// `attach` / `detach` / `list` / `hook` bind bridges to zones on every release and backend.
mod bind;
// The .deb installed in a Debian 12 system booted with systemd: units, bus policy, hook.
mod booted;
// Bridged guests on a host bridge: their zone and br_netfilter, with packets (issue #20).
mod bridged;
// The Cockpit page in headless Chromium, served by cockpit-ws in a libvirt lab (issue #23).
mod cockpit;
// `virtzone serve` puts bindings back after reloads and restarts, under the shipped bus policy.
mod daemon;
// README's first command, `scripts/demo.sh`'s steps, keeps working with this build.
mod demo;
// Every command the documentation shows runs, in order, with the output shown.
mod docs;
// Issue #21: doctor --fix's accepts in Docker's DOCKER-USER as desired state, with a real dockerd.
mod docker_state;
// `virtzone doctor` finds (and `--fix` mends) one real fault each.
mod doctor;
// `forward add --domain` follows a real qemu domain through its hook and lease.
mod domain_forwards;
// `forward` and `allow` carry real packets through libvirt's reject and survive every rebuild.
mod forwards;
// Forwards in the Debian sid system: libvirt 12.8 (both firewall backends), firewalld 2.5.2.
mod forwards12;
// Issue 15's security findings: floods, planted state, a vanishing bus, a hung firewalld.
mod hardening;
// Issue #24's guest, hook and state findings (S1, S3, S4, S8, S9, S10, S12).
mod hardening3;
// Issue #24's host protection: the localnet guard after a wipe of the ruleset, forward purge.
mod hardening_host;
// Issue #21: the daemon heals a wiped ruleset (nft flush ruleset, iptables -F) with one reload.
mod heal;
// `install` / `uninstall` of the zones and policies: live, idempotent, rolled back, refused.
mod install;
// `make install` and the packages: a complete, valid tree; scripts keep an admin's edits.
mod install_tree;
// The lab itself: every release and backend comes up isolated and is cleaned up.
mod lab_smoke;
// libvirt 12 with firewalld 2.5.2: libvirt's binding recorded, `status` and `explain` agree.
mod libvirt12;
// libvirt 9's networks through the shipped hook: zones bound, recorded, unbound.
mod libvirt_e2e;
// One rule for libvirt network names at every boundary, offline (issue #19).
mod names;
// NetworkManager-managed host bridges in the booted system (issue #20).
mod nm;
// Issue #21: no outage of a guest's paths across firewalld reloads and restarts (own NAT table).
mod outage;
// Real packets reach what libvirt's zones promise and nothing else; `status --verify`.
mod packets;
// `virtzone status` and `check` report the real state of every release.
mod status_check;
// The zone model parses, round-trips and agrees with firewalld's own offline check.
mod zone_model;
