//! `enos-sim`: run the local EnOS cloud, or talk to a running one from another terminal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use enos_sim::registry::{DeliveryQos, Registry};
use enos_sim::responder::ResponderOptions;
use enos_sim::{admin, pki, Sim};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "enos-sim", version, about = "A local EnOS IoT cloud for tests, examples and offline development")]
struct Cli {
    /// The admin API of a running simulator (for every subcommand but `serve`).
    #[arg(long, global = true, env = "ENOS_SIM_ADMIN", default_value = "127.0.0.1:18080")]
    admin: SocketAddr,
    /// The file that holds the admin API's token: `serve` writes it (readable by you
    /// only), the other subcommands read it. Default: `admin-PORT.token` in
    /// `$XDG_RUNTIME_DIR/enos-sim`, or in `~/.enos-sim`. `ENOS_SIM_TOKEN` gives the token
    /// itself to the subcommands instead.
    #[arg(long, global = true, env = "ENOS_SIM_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
// Parsed once, at start: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Run the cloud: MQTT on TCP (and TLS), the admin API and its web console, optionally
    /// a responder.
    Serve {
        /// Plain MQTT listener ("none" for no plain listener).
        #[arg(long, default_value = "127.0.0.1:11883")]
        tcp: String,
        /// TLS listener address, e.g. 127.0.0.1:18883.
        #[arg(long)]
        tls: Option<SocketAddr>,
        /// Server certificate (PEM) for TLS; without it a CA and certificate are made and
        /// written to --tls-dir.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// Server key (PEM).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Require client certificates signed by this CA (PEM).
        #[arg(long)]
        client_ca: Option<PathBuf>,
        /// Where generated TLS files go (ca.pem for devices to trust).
        #[arg(long, default_value = "enos-sim-tls")]
        tls_dir: PathBuf,
        /// Registry file (JSON); the built-in registry when absent.
        #[arg(long)]
        registry: Option<PathBuf>,
        /// Add N load devices `demo_pk/load_0..` with secret `load_secret`.
        #[arg(long, default_value_t = 0)]
        fleet: usize,
        /// Packets kept per device in the record (0: none).
        #[arg(long, default_value_t = 1000)]
        record: usize,
        /// Also answer through an external broker, e.g. 127.0.0.1:1883.
        #[arg(long)]
        responder: Option<SocketAddr>,
        /// Shared-subscription group of the responder.
        #[arg(long)]
        group: Option<String>,
        /// Refuse logins whose timestamp is further than this many seconds from this
        /// machine's clock (replayed CONNECTs). Off by default: EnOS is not known to check.
        #[arg(long)]
        max_clock_skew: Option<u64>,
        /// QoS (0 or 1) of the replies to devices' requests; default 1, or the registry
        /// file's `replyQos`. The vendor's SDKs answer faster with 0 (no PUBACK to delay).
        #[arg(long, value_parser = qos)]
        reply_qos: Option<DeliveryQos>,
        /// QoS (0 or 1) of commands and pushes to devices; default 1, or `commandQos`.
        #[arg(long, value_parser = qos)]
        command_qos: Option<DeliveryQos>,
        /// Also serve the device HTTP endpoint (HTTP transport, files, firmware) here,
        /// e.g. 127.0.0.1:18080.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// List the devices.
    Devices,
    /// Show a device (pk/dk).
    Device { device: String },
    /// Show a device's last measure points.
    Points { device: String },
    /// Show a device's packet record.
    Record { device: String },
    /// Invoke a service on a device or sub-device.
    Invoke {
        #[arg(long)]
        device: String,
        #[arg(long)]
        service: String,
        /// Input parameters (JSON object).
        #[arg(default_value = "{}")]
        params: String,
    },
    /// Set measure points on a device.
    SetPoints {
        #[arg(long)]
        device: String,
        /// `{"point": value}`.
        points: String,
    },
    /// Read measure points from a device.
    GetPoints {
        #[arg(long)]
        device: String,
        points: Vec<String>,
    },
    /// Send traffic control to a device (its params as JSON) and print the reply.
    TrafficControl {
        #[arg(long)]
        device: String,
        #[arg(default_value = "{}")]
        params: String,
    },
    /// Push an OTA upgrade (JSON firmware: version, signMethod, sign, fileUrl, fileSize).
    Ota {
        #[arg(long)]
        device: String,
        firmware: String,
    },
    /// Send raw bytes down (hex) and print the device's raw reply.
    Raw {
        #[arg(long)]
        device: String,
        hex: String,
    },
    /// Enable, disable or delete a gateway's sub-devices.
    SubDevices {
        #[arg(long)]
        gateway: String,
        /// enable, disable or delete.
        action: String,
        /// Sub-devices as pk/dk.
        devices: Vec<String>,
    },
    /// Cut a device's connection.
    Cut { device: String },
}

fn split(device: &str) -> Result<(&str, &str), String> {
    device.split_once('/').ok_or_else(|| format!("{device:?} is not pk/dk"))
}

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve {
            tcp,
            tls,
            cert,
            key,
            client_ca,
            tls_dir,
            registry,
            fleet,
            record,
            responder,
            group,
            max_clock_skew,
            reply_qos,
            command_qos,
            http,
        } => {
            let admin = (cli.admin, cli.token_file);
            let cloud = Cloud { registry, fleet, record, max_clock_skew, reply_qos, command_qos, http };
            serve(admin, tcp, tls, (cert, key, client_ca, tls_dir), cloud, responder, group)
        }
        other => client(cli.admin, cli.token_file, other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enos-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a line for the person who started the server; a closed standard output (the
/// terminal gone, a pipe nobody reads) does not stop the server.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// What `serve` sets up the cloud with.
struct Cloud {
    registry: Option<PathBuf>,
    fleet: usize,
    record: usize,
    max_clock_skew: Option<u64>,
    reply_qos: Option<DeliveryQos>,
    command_qos: Option<DeliveryQos>,
    http: Option<SocketAddr>,
}

fn qos(s: &str) -> Result<DeliveryQos, String> {
    s.parse::<u8>().map_err(|e| e.to_string()).and_then(DeliveryQos::try_from)
}

type TlsFiles = (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>, PathBuf);

fn serve(
    (admin_addr, token_file): (SocketAddr, Option<PathBuf>),
    tcp: String,
    tls: Option<SocketAddr>,
    (cert, key, client_ca, tls_dir): TlsFiles,
    Cloud { registry, fleet, record, max_clock_skew, reply_qos, command_qos, http }: Cloud,
    responder: Option<SocketAddr>,
    group: Option<String>,
) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let mut registry = match registry {
        Some(p) => Registry::from_file(&p).map_err(|e| e.to_string())?,
        None => Registry::builtin(),
    };
    registry.add_fleet(fleet);
    registry.reply_qos = reply_qos.unwrap_or(registry.reply_qos);
    registry.command_qos = command_qos.unwrap_or(registry.command_qos);
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut b = Sim::builder().registry(registry).record_limit(record);
        if let Some(s) = max_clock_skew {
            b = b.max_clock_skew(Duration::from_secs(s));
        }
        b = if tcp == "none" { b.no_tcp() } else { b.tcp(tcp.parse().map_err(|e| format!("--tcp: {e}"))?) };
        if let Some(addr) = tls {
            let client_ca = client_ca.map(std::fs::read).transpose().map_err(|e| format!("--client-ca: {e}"))?;
            let identity = match (cert, key) {
                (Some(c), Some(k)) => {
                    let c = std::fs::read(c).map_err(|e| format!("--cert: {e}"))?;
                    let k = std::fs::read(k).map_err(|e| format!("--key: {e}"))?;
                    enos_proto::tls::Identity::from_pem(&c, &k).map_err(|e| e.to_string())?
                }
                _ => {
                    let ca = pki::Ca::new("enos-sim local CA").map_err(|e| e.to_string())?;
                    let server = ca.server_cert().map_err(|e| e.to_string())?;
                    std::fs::create_dir_all(&tls_dir).map_err(|e| e.to_string())?;
                    std::fs::write(tls_dir.join("ca.pem"), &ca.pem).map_err(|e| e.to_string())?;
                    say!("TLS CA for devices to trust: {}", tls_dir.join("ca.pem").display());
                    server.identity().map_err(|e| e.to_string())?
                }
            };
            let config = enos_proto::tls::server_config(&identity, client_ca.as_deref()).map_err(|e| e.to_string())?;
            b = b.tls(addr, config);
        }
        if let Some(addr) = http {
            b = b.http(addr);
        }
        let sim = b.start().await.map_err(|e| e.to_string())?;
        if let Some(url) = sim.http_url() {
            say!("device HTTP endpoint listening on {url}");
        }
        if let Some(a) = sim.tcp_addr() {
            say!("MQTT (tcp) listening on tcp://{a}");
        }
        if let Some(a) = sim.tls_addr() {
            say!("MQTT (tls) listening on ssl://{a}");
        }
        let options = admin::AdminOptions::new().map_err(|e| format!("admin API token: {e}"))?;
        let admin =
            admin::serve(sim.clone(), admin_addr, options.clone()).await.map_err(|e| format!("admin API: {e}"))?;
        let token_file = token_file.unwrap_or_else(|| admin::token_file(admin.port()));
        admin::write_token(&token_file, &options.token)
            .map_err(|e| format!("admin API token file {}: {e}", token_file.display()))?;
        say!("admin API listening on {admin}");
        say!("admin API token (also in {}, for the subcommands): {}", token_file.display(), options.token.expose());
        say!("web console: http://{admin}/#token={}", options.token.expose());
        let _responder = match responder {
            Some(broker) => {
                let mut opts = ResponderOptions::new(broker);
                opts.group = group;
                let r = sim.responder(opts).await.map_err(|e| e.to_string())?;
                say!("responder connected to {broker}");
                Some(r)
            }
            None => None,
        };
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        sim.shutdown();
        let _ = std::fs::remove_file(&token_file);
        Ok(())
    })
}

/// The admin API's token: `ENOS_SIM_TOKEN`, or the file `serve` wrote.
fn token(admin_addr: SocketAddr, token_file: Option<PathBuf>) -> Result<enos_proto::Secret, String> {
    if let Some(t) = std::env::var_os("ENOS_SIM_TOKEN") {
        return Ok(enos_proto::Secret::new(t.to_string_lossy().into_owned()));
    }
    let path = token_file.unwrap_or_else(|| admin::token_file(admin_addr.port()));
    admin::read_token(&path).map_err(|e| {
        format!(
            "no token for the admin API at {admin_addr}: {}: {e} (is `enos-sim serve` running there? ENOS_SIM_TOKEN or --token-file give it)",
            path.display()
        )
    })
}

fn client(admin_addr: SocketAddr, token_file: Option<PathBuf>, cmd: Cmd) -> Result<(), String> {
    let (method, path, body) = match cmd {
        Cmd::Serve { .. } => unreachable!("handled by serve"),
        Cmd::Devices => ("GET", "/devices".to_owned(), None),
        Cmd::Device { device } => {
            let (pk, dk) = split(&device)?;
            ("GET", format!("/devices/{pk}/{dk}"), None)
        }
        Cmd::Points { device } => {
            let (pk, dk) = split(&device)?;
            ("GET", format!("/devices/{pk}/{dk}/points"), None)
        }
        Cmd::Record { device } => {
            let (pk, dk) = split(&device)?;
            ("GET", format!("/devices/{pk}/{dk}/record"), None)
        }
        Cmd::Invoke { device, service, params } => {
            let (pk, dk) = split(&device)?;
            ("POST", format!("/devices/{pk}/{dk}/services/{service}"), Some(parse(&params)?))
        }
        Cmd::SetPoints { device, points } => {
            let (pk, dk) = split(&device)?;
            ("POST", format!("/devices/{pk}/{dk}/points/set"), Some(parse(&points)?))
        }
        Cmd::GetPoints { device, points } => {
            let (pk, dk) = split(&device)?;
            ("POST", format!("/devices/{pk}/{dk}/points/get"), Some(json!(points)))
        }
        Cmd::TrafficControl { device, params } => {
            let (pk, dk) = split(&device)?;
            ("POST", format!("/devices/{pk}/{dk}/traffic-control"), Some(parse(&params)?))
        }
        Cmd::Ota { device, firmware } => {
            let (pk, dk) = split(&device)?;
            ("POST", format!("/devices/{pk}/{dk}/ota"), Some(parse(&firmware)?))
        }
        Cmd::Raw { device, hex } => {
            let (pk, dk) = split(&device)?;
            ("POST", format!("/devices/{pk}/{dk}/raw"), Some(json!(hex)))
        }
        Cmd::SubDevices { gateway, action, devices } => {
            let (pk, dk) = split(&gateway)?;
            let list = devices
                .iter()
                .map(|d| split(d).map(|(p, k)| json!({"productKey": p, "deviceKey": k})))
                .collect::<Result<Vec<_>, _>>()?;
            ("POST", format!("/gateways/{pk}/{dk}/sub-devices/{action}"), Some(Value::Array(list)))
        }
        Cmd::Cut { device } => {
            let (pk, dk) = split(&device)?;
            ("POST", format!("/devices/{pk}/{dk}/cut"), None)
        }
    };
    let token = token(admin_addr, token_file)?;
    let (status, value) = admin::call(admin_addr, &token, method, &path, body.as_ref())
        .map_err(|e| format!("cannot reach the simulator's admin API at {admin_addr}: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    if status == 200 {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}
