//! Real containers for tests, on an engine with no registry: the image is made here from
//! Debian's static busybox (`busybox-static`) with `docker import`.

use crate::wait::wait_for;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const IMAGE: &str = "operator-test/busybox:latest";
const BUSYBOX: &str = "/bin/busybox";

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI ({e}); is Docker installed?"))
}

/// Makes [`IMAGE`] unless the engine already has it.
pub fn busybox_image() -> &'static str {
    if docker(&["image", "inspect", IMAGE]).status.success() {
        return IMAGE;
    }
    let bin = std::fs::read(BUSYBOX)
        .unwrap_or_else(|e| panic!("{BUSYBOX} is missing ({e}): apt-get install busybox-static"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/busybox"), bin).unwrap();
    let status = Command::new("chmod")
        .args(["755"])
        .arg(root.join("bin/busybox"))
        .status()
        .unwrap();
    assert!(status.success());
    let tar = dir.path().join("root.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg("bin")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of the busybox root");
    let out = docker(&["import", tar.to_str().unwrap(), IMAGE]);
    // Two tests may race to import; either import is fine.
    assert!(
        out.status.success() || docker(&["image", "inspect", IMAGE]).status.success(),
        "docker import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    IMAGE
}

/// A running container, removed on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d` of busybox's `sh -c script`.
    pub fn busybox(name: &str, script: &str) -> Container {
        let image = busybox_image();
        let _ = docker(&["rm", "-f", name]);
        let out = Command::new("docker")
            .args(["run", "-d", "--network", "none", "--name", name, image])
            .args(["/bin/busybox", "sh", "-c", script])
            .stdout(Stdio::piped())
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container {
            name: name.to_string(),
        }
    }

    /// Waits until the container's log holds `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        wait_for(
            &format!("`{needle}` in the log of {}", self.name),
            Duration::from_secs(15),
            || {
                let out = docker(&["logs", &self.name]);
                let text = String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr);
                text.contains(needle).then_some(())
            },
        );
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}
