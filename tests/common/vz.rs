//! `virtzone` run in a lab, for tests that expect it to succeed: [`vz_ok`] fails the test with both
//! streams and the lab's diagnostics.

use std::process::Output;

use super::libvirt::LibvirtLab;
use super::sidroot::SidSystem;
use super::text;

/// A lab that runs the crate's `virtzone` with its own state directory and bus, and describes
/// itself for a failing test's message.
pub trait VirtzoneLab {
    /// `virtzone ARGS` in the lab, run to completion.
    fn virtzone_output(&self, args: &[&str]) -> Output;
    /// The lab's logs, for a panic message.
    fn lab_diagnostics(&self) -> String;
}

impl VirtzoneLab for LibvirtLab {
    fn virtzone_output(&self, args: &[&str]) -> Output {
        self.virtzone().args(args).output().expect("run virtzone")
    }

    fn lab_diagnostics(&self) -> String {
        self.diagnostics()
    }
}

impl VirtzoneLab for SidSystem {
    fn virtzone_output(&self, args: &[&str]) -> Output {
        let mut all = vec!["virtzone"];
        all.extend(args);
        self.run(&all)
    }

    fn lab_diagnostics(&self) -> String {
        self.diagnostics()
    }
}

/// `virtzone ARGS` in the lab.
pub fn vz(lab: &impl VirtzoneLab, args: &[&str]) -> Output {
    lab.virtzone_output(args)
}

/// `virtzone ARGS` in the lab, which must succeed; its standard output.
pub fn vz_ok(lab: &impl VirtzoneLab, args: &[&str]) -> String {
    let out = vz(lab, args);
    assert!(
        out.status.success(),
        "virtzone {args:?}: exit {:?}\nstdout: {}\nstderr: {}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        lab.lab_diagnostics()
    );
    text(&out.stdout)
}
