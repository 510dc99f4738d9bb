//! A real Docker Engine (Debian's `docker.io`), started by a test in a private
//! directory with this machine's settings (no iptables, no bridge, the vfs storage
//! driver), its one image imported from a busybox-static root filesystem.

use crate::cri::busybox_layer;
use crate::live::wait_until;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The image containers here run, as `docker import` names it.
pub const IMAGE: &str = "rulehost-busybox:1";

/// A stand-in API server on 127.0.0.1 that accepts and closes every connection (so a
/// `nc` client exits at once); returns its port.
pub fn api_server() -> String {
    closing_listener("127.0.0.1").to_string()
}

/// A listener on `ip` (any port) that accepts and closes every connection; its port.
pub fn closing_listener(ip: &str) -> u16 {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    port
}

/// A running dockerd, stopped (containers removed first) on drop.
pub struct Dockerd {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    containers: Vec<String>,
}

impl Dockerd {
    /// Starts dockerd in `/tmp/rulehost-dockerd-<name>-<pid>` and imports the image.
    pub fn start(name: &str) -> Dockerd {
        let dir =
            std::env::temp_dir().join(format!("rulehost-dockerd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("docker.sock");
        let config = dir.join("daemon.json");
        std::fs::write(
            &config,
            r#"{"iptables": false, "bridge": "none", "storage-driver": "vfs"}"#,
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian package `docker.io`; `make test` installs it)");
        let mut dockerd = Dockerd {
            child,
            dir,
            socket,
            containers: Vec::new(),
        };
        wait_until(
            || dockerd.docker(&["version"]).is_ok(),
            || {
                format!(
                    "dockerd never answered; see {}",
                    dockerd.dir.join("dockerd.log").display()
                )
            },
        );
        let layer = busybox_layer(&dockerd.dir.join("image"));
        dockerd
            .docker(&[
                "import",
                "--change",
                r#"ENTRYPOINT ["/bin/sleep","100000"]"#,
                layer.to_str().unwrap(),
                IMAGE,
            ])
            .expect("docker import");
        dockerd.containers.clear();
        dockerd
    }

    /// `docker ARGS` against this daemon, as run.
    fn output(&self, args: &[&str]) -> Result<std::process::Output, String> {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .map_err(|e| format!("docker: {e}"))
    }

    /// A container's stdout and stderr so far.
    pub fn logs(&self, id: &str) -> (String, String) {
        match self.output(&["logs", id]) {
            Ok(out) => (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ),
            Err(error) => (String::new(), error),
        }
    }

    /// Runs `docker ARGS` against this daemon; its stdout, trimmed.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = self.output(args)?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
            false => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        }
    }

    /// `docker run -d --network host ARGS`; returns the container id.
    pub fn run(&mut self, args: &[&str]) -> String {
        let mut all = vec!["run", "-d", "--network", "host"];
        all.extend(args);
        let id = self.docker(&all).expect("docker run");
        self.containers.push(id.clone());
        id
    }

    /// Removes container `id` (started by other means) with the daemon.
    pub fn adopt(&mut self, id: &str) {
        self.containers.push(id.to_owned());
    }

    /// Waits until container `id` has exited.
    pub fn wait_exited(&self, id: &str) {
        wait_until(
            || {
                self.docker(&["inspect", "--format", "{{.State.Status}}", id])
                    .is_ok_and(|s| s == "exited")
            },
            || format!("container {id} never exited"),
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.containers) {
            let _ = self.docker(&["rm", "-f", &id]);
        }
        // SAFETY: signalling the daemon this test started; SIGTERM lets it stop its
        // containerd and unmount what it mounted.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Detaches every mount under `dir` that the daemon left (its default network
/// namespace), deepest first, so the directory can be removed.
fn unmount_under(dir: &std::path::Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(dir.to_str().unwrap_or("\0")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        if let Ok(path) = std::ffi::CString::new(point) {
            // SAFETY: umount2 with a NUL-terminated path we own.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
