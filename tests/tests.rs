//! The integration suite, as one test binary: every module runs against real components (a private
//! dbus-daemon, real firewalld releases, real libvirtd, network namespaces, bridges and packets), built
//! by the lab in [`common`]. One binary compiles the lab once and lets the compiler see which of its
//! parts are used.

mod common;

/// Issue #22: desired state in drop-in files, `virtzone apply`, ownership, and the Ansible module.
mod apply;
mod bind;
mod booted;
// The Cockpit page in headless Chromium, served by cockpit-ws in a libvirt lab (issue #23).
mod cockpit;
mod daemon;
mod demo;
mod docs;
mod doctor;
mod domain_forwards;
mod forwards;
mod forwards12;
mod hardening;
// Issue #24's guest, hook and state findings (S1, S3, S4, S8, S9, S10, S12).
mod hardening3;
// Issue #24's host protection: the localnet guard after a wipe of the ruleset, forward purge.
mod hardening_host;
// Issue #21: the daemon heals a wiped ruleset (nft flush ruleset, iptables -F) with one reload.
mod heal;
mod install;
mod install_tree;
mod lab_smoke;
mod libvirt12;
mod libvirt_e2e;
// NetworkManager-managed host bridges in the booted system (issue #20).
mod nm;
mod packets;
mod status_check;
mod zone_model;
