//! Facts about this host's network namespace.

use std::path::Path;

/// The bridges of the current network namespace, sorted by name.
///
/// Read from sysfs (`/sys/class/net/*/bridge`), which shows the namespace sysfs was mounted for:
/// `ip netns exec` remounts it, a bare `unshare --net` does not.
pub fn bridges() -> std::io::Result<Vec<String>> {
    bridges_in(Path::new("/sys/class/net"))
}

fn bridges_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().join("bridge").is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_bridge_directories() {
        let dir = tempfile::tempdir().unwrap();
        for (name, is_bridge) in [("virbr0", true), ("eth0", false), ("br-x", true)] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            if is_bridge {
                std::fs::create_dir(dir.path().join(name).join("bridge")).unwrap();
            }
        }
        assert_eq!(super::bridges_in(dir.path()).unwrap(), ["br-x", "virbr0"]);
    }
}
