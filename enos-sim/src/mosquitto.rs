//! A `mosquitto` broker started on a free loopback port, for tests and local setups that
//! need a real third-party broker (Debian package `mosquitto`).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let broker = enos_sim::mosquitto::Mosquitto::start(None)?;
//! println!("mosquitto on {}", broker.addr());
//! # Ok(()) }
//! ```

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// TLS files for a broker listener (PEM).
#[derive(Debug, Clone)]
pub struct MosquittoTls {
    /// The CA that signed client certificates (and that clients trust).
    pub ca_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server key.
    pub key_pem: String,
    /// Whether clients must present a certificate.
    pub require_certificate: bool,
}

/// A running mosquitto; dropping it stops the process and removes its files.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    dir: PathBuf,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Mosquitto {
    /// Starts mosquitto on a free port of 127.0.0.1 (anonymous clients allowed), and,
    /// when `tls` is given, a TLS listener on a second free port.
    ///
    /// # Errors
    ///
    /// When mosquitto is not installed, or does not listen within 10 s.
    pub fn start(tls: Option<MosquittoTls>) -> std::io::Result<Mosquitto> {
        let dir = std::env::temp_dir().join(format!("enos-mosquitto-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let mut conf = format!(
            "allow_anonymous true\npersistence false\nmax_queued_messages 100000\nset_tcp_nodelay true\nlistener {port} 127.0.0.1\n"
        );
        let mut tls_addr = None;
        if let Some(t) = &tls {
            for (name, text) in [("ca.pem", &t.ca_pem), ("cert.pem", &t.cert_pem), ("key.pem", &t.key_pem)] {
                std::fs::write(dir.join(name), text)?;
            }
            let tls_port = free_port()?;
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/cert.pem\nkeyfile {0}/key.pem\nrequire_certificate {1}\n",
                dir.display(),
                t.require_certificate
            ));
            tls_addr = Some(SocketAddr::from(([127, 0, 0, 1], tls_port)));
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::File::create(&conf_path)?.write_all(conf.as_bytes())?;
        // Started as root, mosquitto drops to its own user: it must read these files.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            for entry in std::fs::read_dir(&dir)? {
                std::fs::set_permissions(entry?.path(), std::fs::Permissions::from_mode(0o644))?;
            }
        }
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot run mosquitto ({e}); install the Debian package mosquitto"),
                )
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let broker = Mosquitto { child, addr, tls_addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        for a in [Some(addr), tls_addr].into_iter().flatten() {
            while TcpStream::connect(a).is_err() {
                if Instant::now() > deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "mosquitto did not listen within 10 s",
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(broker)
    }

    /// The plain listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS listener's address, when started with TLS.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
