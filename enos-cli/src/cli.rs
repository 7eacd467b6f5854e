//! The command line: global options, one subcommand per device operation, `listen` and
//! `replay`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::settings::ConnArgs;

/// What `enos --help` ends with: the exit codes and where settings come from.
pub const AFTER_HELP: &str = "\
Settings come from flags, then ENOS_* environment variables (ENOS_URL, ENOS_PRODUCT_KEY,
ENOS_DEVICE_KEY, ENOS_DEVICE_SECRET, ENOS_PRODUCT_SECRET, ENOS_CERT, ENOS_KEY, ENOS_PFX,
ENOS_PASSPHRASE, ENOS_CA, ENOS_SERVER_NAME, ENOS_TIMEOUT, ENOS_CONNECT_TIMEOUT,
ENOS_SUB_SECRETS, ENOS_SUB_PRODUCT_SECRETS, ENOS_SECRETS_DIR, ENOS_PROFILE), then the profile
(--profile or ENOS_PROFILE) of the profile file ($ENOS_CONFIG, else
$XDG_CONFIG_HOME/enos/profiles.toml, else ~/.config/enos/profiles.toml).
`enos file` needs an http:// or https:// URL (the HTTP transport); `enos integration` signs in
as the product's integration channel with the product key and product secret:

    [lab]
    url = \"tcp://127.0.0.1:11883\"
    product_key = \"demo_pk\"
    device_key = \"demo_device\"
    device_secret = \"demo_device_secret\"
    [lab.sub_devices]
    \"demo_sub_pk/demo_sub_1\" = \"demo_sub_1_secret\"

Secrets are never printed, not even with -v.

Exit codes:
    0    done
    1    the cloud answered with an error code (replay: it refused some rows), does not have
         what was asked (a stored file, a firmware version), or sent a firmware that failed
         its check
    2    usage error: bad argument, missing or invalid setting, bad input (JSON, hex, a row)
    3    could not connect or authenticate (refused, unreachable, TLS), or connection lost
    4    timed out: no connection or no reply within the timeout
    5    local I/O error (a file, the --exec handler program)
    130  interrupted (Ctrl-C or SIGTERM) before the work was done: replay (--resume goes on
         from there) and integration post; other commands end at the signal itself";

/// `enos`: an EnOS device (or gateway) on the command line.
#[derive(Debug, Parser)]
#[command(name = "enos", version, about = "An EnOS IoT device or gateway on the command line: post data and files, answer commands, replay history, download firmware, post through the integration channel", after_help = AFTER_HELP)]
pub struct Cli {
    /// One JSON document per result on standard output, for scripts.
    #[arg(long, global = true, help_heading = "Output and requests")]
    pub json: bool,
    /// Notes on standard error: the settings in use and where each came from (secrets
    /// only as "set"), the connection; -vv adds the SDK's log (RUST_LOG refines it).
    #[arg(short, long, global = true, help_heading = "Output and requests", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// QoS of the requests, 0 or 1.
    #[arg(long, global = true, help_heading = "Output and requests", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Send without waiting for the cloud's reply (ends at the PUBACK, or once written at QoS 0);
    /// not for commands whose output is the reply (tag get, attribute get, raw, tsl, ota
    /// firmwares, ota download, integration raw), nor for replay.
    #[arg(long, global = true, help_heading = "Output and requests")]
    pub no_reply: bool,
    /// Act as this sub-device (pk/dk) of the gateway: it is logged in first, with its
    /// secret from --sub-secret, ENOS_SUB_SECRETS or the profile's sub_devices.
    #[arg(long = "as", global = true, help_heading = "Output and requests", value_name = "PK/DK")]
    pub as_device: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Connect, say how, and disconnect: checks the settings and the credentials.
    Connect,
    /// Post measure points: enos post '{"temp":21.5}'.
    Post {
        /// The points as a JSON object {id: value}; a value with a quality is
        /// {"value": v, "quality": q}.
        points: String,
        /// Their time: epoch milliseconds or RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Resume measure points recorded while offline, at their time.
    Resume {
        /// The points as a JSON object {id: value}.
        points: String,
        /// Their time: epoch milliseconds or RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Tags: get, update, delete.
    #[command(subcommand)]
    Tag(TagCmd),
    /// Attributes: get, update, delete.
    #[command(subcommand)]
    Attribute(AttributeCmd),
    /// Post an event: enos event overheat '{"level":2}'.
    Event {
        /// The event's identifier.
        id: String,
        /// Its parameters as a JSON object.
        #[arg(default_value = "{}")]
        params: String,
    },
    /// Send raw bytes up (hex) and print the cloud's raw reply (hex).
    Raw {
        /// The bytes, in hex: 0a1b2c, 0x0a1b, "0a 1b".
        hex: String,
    },
    /// Post a device log entry.
    Log {
        /// The entry's text (`content`).
        content: String,
        /// Its level, for example info.
        #[arg(long)]
        level: Option<String>,
        /// The module it comes from.
        #[arg(long)]
        module: Option<String>,
        /// A trace id.
        #[arg(long)]
        trace_id: Option<String>,
        /// Its time: epoch milliseconds or RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Report the state of the device's network link.
    Network {
        /// Received signal strength.
        #[arg(long, allow_hyphen_values = true)]
        rssi: Option<f64>,
        /// Signal-to-noise ratio.
        #[arg(long, allow_hyphen_values = true)]
        snr: Option<f64>,
        /// Share of packets lost.
        #[arg(long)]
        packet_loss: Option<f64>,
        /// Kind of link, for example 4G.
        #[arg(long = "type", value_name = "TYPE")]
        network_type: Option<String>,
        /// What went wrong on the link.
        #[arg(long)]
        error: Option<String>,
    },
    /// OTA: report the firmware version, list the firmwares offered, download one
    /// (checked), report progress.
    #[command(subcommand)]
    Ota(OtaCmd),
    /// Stored files, over the HTTP transport (an http:// or https:// URL): post measure
    /// points with files, download (whole or a byte range), a download URL, delete.
    #[command(subcommand)]
    File(FileCmd),
    /// Report the connection state of the nodes behind the device: enos connection-state
    /// '#001=connected' '#002=disconnected' --full --relation '#001=#002'.
    ConnectionState {
        /// The nodes: ID=STATE (STATE connected, disconnected or unknown, or 1, 2, 3), or
        /// one JSON array of {"nodeId", "state", "assetId"?, "name"?, "info"?}.
        #[arg(required = true, value_name = "ID=STATE")]
        nodes: Vec<String>,
        /// A full snapshot of every node (else an update of the nodes that changed).
        #[arg(long)]
        full: bool,
        /// A parent node and its children, PARENT=CHILD[,CHILD...] (repeatable; only with
        /// --full).
        #[arg(long, requires = "full", value_name = "PARENT=CHILDREN")]
        relation: Vec<String>,
        /// The report's time: epoch milliseconds or RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// The product's message-integration channel (secure mode 4: the product key and
    /// secret sign it in): post for many devices at once.
    #[command(subcommand)]
    Integration(IntegrationCmd),
    /// Print the product's thing model (TSL template).
    Tsl,
    /// A gateway's topology: get, add, delete sub-devices.
    #[command(subcommand)]
    Topo(TopoCmd),
    /// Log sub-devices in through the gateway (several: one batch login).
    Login {
        /// The sub-devices, pk/dk.
        #[arg(required = true, value_name = "PK/DK")]
        devices: Vec<String>,
    },
    /// Log a sub-device out.
    Logout {
        /// The sub-device, pk/dk.
        #[arg(value_name = "PK/DK")]
        device: String,
    },
    /// Register a sub-device with the gateway (dynamic registration); its secret is kept
    /// in the secrets folder, never printed.
    Register {
        /// The sub-device: its product key, and its device key (PK/DK) unless the cloud
        /// is to make one.
        #[arg(value_name = "PK[/DK]")]
        device: String,
        /// Its display name.
        #[arg(long)]
        name: String,
        /// Its time zone.
        #[arg(long, default_value = "+00:00")]
        timezone: String,
        /// Initial attribute values, a JSON object.
        #[arg(long, value_name = "JSON")]
        attributes: Option<String>,
        /// A description.
        #[arg(long)]
        desc: Option<String>,
    },
    /// Stay connected and answer commands from the cloud, printing each as one JSON line.
    Listen(ListenArgs),
    /// Backfill history from a CSV or JSON lines file through (batch) resumes.
    Replay(ReplayArgs),
}

/// `enos tag`.
#[derive(Debug, Subcommand)]
pub enum TagCmd {
    /// Print tags (all when none is named).
    #[command(alias = "query")]
    Get {
        /// Tag keys.
        keys: Vec<String>,
    },
    /// Add or change tags: key=value ..., or one JSON object of strings.
    #[command(alias = "set")]
    Update {
        /// key=value pairs, or {"key":"value"}.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Delete tags.
    Delete {
        /// Tag keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// `enos attribute`.
#[derive(Debug, Subcommand)]
pub enum AttributeCmd {
    /// Print attribute values (all when none is named).
    #[command(alias = "query")]
    Get {
        /// Attribute identifiers.
        ids: Vec<String>,
    },
    /// Set attribute values from a JSON object {id: value}.
    #[command(alias = "set")]
    Update {
        /// The values, a JSON object.
        attributes: String,
    },
    /// Delete attribute values.
    Delete {
        /// Attribute identifiers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// `enos ota`.
#[derive(Debug, Subcommand)]
pub enum OtaCmd {
    /// Report the firmware version the device runs.
    Version {
        /// The version.
        version: String,
    },
    /// List the firmwares the cloud offers the device.
    Firmwares,
    /// Download a firmware the cloud offers to a file, checking its digest and size as
    /// it arrives: the one of --version, else the newest (or the one --firmware
    /// describes). A failed download or check does not touch the path.
    #[command(after_help = "\
The firmware is one of those `enos ota firmwares` lists: the one --version names, else the
highest version (compared part by part, numbers as numbers). --firmware takes the firmware of
an upgrade the cloud pushed instead, as `enos listen` prints it (its \"firmware\"):
    enos ota download --firmware '{\"version\":\"2.0.1\",\"signMethod\":\"md5\",\"sign\":\"...\",\"fileUrl\":\"...\",\"fileSize\":1024}' -o fw.bin

A file of the cloud's storage (enos-connect://...) needs the HTTP transport (an http:// or
https:// URL); a plain http:// or https:// file URL is fetched on either transport. The
bytes go to PATH.part, renamed to PATH once the digest (md5, sha1, sha256) and the size
match (an interrupted download leaves PATH.part); progress shows on standard error when it is
a terminal, and goes to the cloud.")]
    Download {
        /// The version to download (default: the highest offered).
        #[arg(long)]
        version: Option<String>,
        /// The firmware itself, as JSON {version, signMethod, sign, fileUrl, fileSize},
        /// rather than one the cloud offers.
        #[arg(long, value_name = "JSON", conflicts_with = "version")]
        firmware: Option<String>,
        /// Where to write it.
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: PathBuf,
    },
    /// Report an upgrade's progress: 0..100, or -1 failed, -2 download failed, -3 check
    /// failed, -4 burn failed, -5 ignored.
    Progress {
        /// The step.
        #[arg(allow_hyphen_values = true)]
        step: String,
        /// What is happening.
        #[arg(default_value = "")]
        desc: String,
    },
}

/// `enos file`.
#[derive(Debug, Subcommand)]
pub enum FileCmd {
    /// Post measure points with files: each value "local://NAME" (of a point, or of a
    /// member of a struct point) is the file NAME, or the file --file NAME=PATH gives.
    #[command(after_help = "\
Examples:
    enos file post '{\"newFile\":\"local://photo.jpg\"}'             # the file ./photo.jpg
    enos file post '{\"snapshot\":{\"img\":\"local://cam\",\"label\":\"cam1\"},\"temp\":20.5}' --file cam=/tmp/cam.jpg

Each file goes up with the request (at most 100 MB); the cloud keeps it and the point's value
becomes its URI, printed for each file (enos-connect://NAME, NAME the file's name on the
wire). Needs the HTTP transport: an http:// or https:// URL.")]
    Post {
        /// The points as a JSON object {id: value}, file values as "local://NAME".
        points: String,
        /// The file of local://NAME, when it is not the file NAME itself (repeatable).
        #[arg(long = "file", value_name = "NAME=PATH")]
        files: Vec<String>,
        /// Their time: epoch milliseconds or RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Download a stored file, whole or a byte range: to standard output, or to a file
    /// (-o; written to PATH.part, renamed to PATH once complete; an interrupted download
    /// leaves PATH.part).
    Download {
        /// The file's URI, e.g. enos-connect://AbCdEfGhIjk.jpg.
        uri: String,
        /// Where to write it ("-": standard output, the default).
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: Option<PathBuf>,
        /// Only these bytes: START-END (both included), START- (to the end), or -N (the
        /// last N).
        #[arg(long, allow_hyphen_values = true, value_name = "RANGE")]
        range: Option<String>,
        /// What the file is.
        #[arg(long, value_enum, default_value_t = FileKind::Feature)]
        category: FileKind,
    },
    /// Print a URL that downloads a stored file without a session.
    Url {
        /// The file's URI.
        uri: String,
        /// What the file is.
        #[arg(long, value_enum, default_value_t = FileKind::Feature)]
        category: FileKind,
    },
    /// Delete a stored file.
    Delete {
        /// The file's URI.
        uri: String,
    },
}

/// What a stored file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileKind {
    /// The value of a measure point (posted with `enos file post`).
    Feature,
    /// A firmware.
    Ota,
}

/// `enos integration`.
#[derive(Debug, Subcommand)]
pub enum IntegrationCmd {
    /// Post measure points, events or attributes of many devices of the product.
    #[command(after_help = "\
INPUT is JSON, a file, or - for standard input: a JSON array of entries, or one entry per
line (JSON lines). An entry names a device of the channel's product and holds one of
measurepoints, events or attributes:
    {\"deviceKey\": \"dev_001\", \"time\": 1714564800000, \"measurepoints\": {\"temp\": 21.5}}
    {\"deviceKey\": \"dev_002\", \"time\": \"2024-05-01T12:00:00Z\", \"events\": {\"overheat\": {\"level\": 2}}}
    {\"deviceKey\": \"dev_002\", \"attributes\": {\"capacity\": 12.5}}
A time is epoch milliseconds or RFC 3339 (default: the request's time; attributes have none).

Entries go out --batch per request, measure points first, then events, then attributes; the
cloud takes a request whole or refuses it with its first error (1257 device not found, 1204
model validation failed). Every request is sent; the exit code is 1 if one was refused.

Connects as the product's integration channel: --url, --product-key and --product-secret
(or ENOS_URL, ENOS_PRODUCT_KEY, ENOS_PRODUCT_SECRET, or a profile); the product must have
its channel. The device key and secret are not used.")]
    Post {
        /// The entries: JSON, a file, or - for standard input.
        input: String,
        /// Entries per request.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000), value_name = "N")]
        batch: u64,
    },
    /// Send raw bytes (hex) on the channel and print the cloud's raw reply (hex).
    Raw {
        /// The bytes, in hex: 0a1b2c, 0x0a1b, "0a 1b".
        hex: String,
    },
}

/// `enos topo`.
#[derive(Debug, Subcommand)]
pub enum TopoCmd {
    /// List the gateway's sub-devices.
    Get,
    /// Add sub-devices (each signed with its secret, as for login).
    Add {
        /// The sub-devices, pk/dk.
        #[arg(required = true, value_name = "PK/DK")]
        devices: Vec<String>,
    },
    /// Remove sub-devices.
    Delete {
        /// The sub-devices, pk/dk.
        #[arg(required = true, value_name = "PK/DK")]
        devices: Vec<String>,
    },
}

/// `enos listen`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
ANSWER is KIND:REPLY for a service (KIND service=ID, or service=* for every service), else
KIND=REPLY, with KIND one of set, get, raw, ota, device (enable/disable/delete), sub-devices,
traffic. REPLY is the reply's data as JSON (code 200), error=CODE[:MESSAGE] for an error
reply, or hex bytes for raw:
    --answer service=reset:'{\"done\":true}' --answer set='{}' --answer get='{\"temp\":21.5}'
    --answer 'service=reboot:error=2001:busy' --answer raw=0a0b

--exec PROGRAM answers every command no --answer takes: it gets the command as one JSON line
on standard input and prints the reply's data as JSON on standard output (hex for raw). A
non-zero exit, a timeout, more than 1 MiB of output or output that is not JSON answers code
1102 with the reason. Commands that come together are answered together: up to 4 runs of the
program at once. A bare PROGRAM name is looked for on PATH at the start.
Commands nothing answers get the SDK's default reply (1101; raw: none).

Each command, with its reply, is printed as one JSON line on standard output; listen ends
(exit 0) at Ctrl-C or SIGTERM, after --count commands, or once standard output is closed.")]
pub struct ListenArgs {
    /// A fixed reply (repeatable): see below.
    #[arg(long, value_name = "ANSWER")]
    pub answer: Vec<String>,
    /// A program that answers each command (run without a shell).
    #[arg(long, value_name = "PROGRAM")]
    pub exec: Option<PathBuf>,
    /// Seconds the --exec program may take before it is killed and 1102 answered (1 to 86400).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400), value_name = "SECS")]
    pub exec_timeout: u64,
    /// Exit after this many commands (1 or more).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub count: Option<u64>,
    /// Also log these sub-devices in, so that their commands come (repeatable).
    #[arg(long, value_name = "PK/DK")]
    pub sub: Vec<String>,
}

/// `enos replay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
CSV: a header `time,point1,point2,...` (and an optional `device` column of pk/dk for a
gateway's sub-devices), then one row per time; an empty cell is no value; a cell that is JSON
(21.5, true, [1,2], \"text\") is that value, any other text a string.
JSON lines: {\"time\": ..., \"device\": \"pk/dk\" (optional), \"points\": {...}} per line.
Times are epoch milliseconds or RFC 3339.

The rows are checked before anything is sent. After each answered request the progress is
saved atomically in FILE.enos-progress: an interrupted replay (Ctrl-C, SIGTERM) goes on with
--resume without sending again what the cloud answered. After a crash, the requests that were
in flight are sent again; after a request that failed (no reply in time, the connection lost),
so are the requests after it, answered or not (a resume of the same point and time
overwrites itself). --resume refuses a file whose rows before the checkpoint changed.
Rows the cloud refuses are counted by code and not sent again; the exit code is then 1.")]
pub struct ReplayArgs {
    /// The CSV or JSON lines file.
    pub file: PathBuf,
    /// Rows per second, at most (0.001 or more); 0: as fast as the window allows.
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "ROWS")]
    pub rate: f64,
    /// Rows per request (1 and no sub-device: single resumes; else batch resumes).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000), value_name = "N")]
    pub batch: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256), value_name = "N")]
    pub window: u64,
    /// Go on from FILE.enos-progress, where an earlier replay stopped.
    #[arg(long, conflicts_with = "restart")]
    pub resume: bool,
    /// Start from the first row even though FILE.enos-progress exists.
    #[arg(long)]
    pub restart: bool,
    /// The file's format (default: from its extension, else from its first line).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Have the cloud skip invalid points instead of refusing their whole request.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Check every row and print the count; send nothing (no connection settings needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after this many rows, as an interruption would.
    #[arg(long, hide = true, value_name = "ROWS")]
    pub stop_after: Option<u64>,
}

/// `--rate`: 0 (no limit), or a finite number of rows a second from 0.001 up.
fn rate(text: &str) -> Result<f64, String> {
    let r: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of rows a second"))?;
    if r == 0.0 || (r.is_finite() && r >= 0.001) {
        Ok(r)
    } else {
        Err(format!("{text:?}: a rate is 0 (no limit) or a number of rows a second from 0.001 up"))
    }
}

/// An input format of `replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn debug_output_names_secrets_without_showing_them() {
        let cli = Cli::try_parse_from([
            "enos",
            "--device-secret",
            "s3cret-a",
            "--product-secret",
            "s3cret-b",
            "--passphrase",
            "s3cret-c",
            "--sub-secret",
            "pk/dk=s3cret-d",
            "--sub-product-secret",
            "pk=s3cret-e",
            "--sub-secret",
            "s3cret-f=pk/dk",
            "--sub-secret",
            "s3cret-g",
            "connect",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("device_secret: Some(\"..\")") && shown.contains("pk/dk=.."), "{shown}");
    }

    #[test]
    fn no_argument_of_a_subcommand_shadows_a_global_one() {
        let cmd = Cli::command();
        let globals: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        fn walk(c: &clap::Command, globals: &[&str]) {
            for sub in c.get_subcommands() {
                for a in sub.get_arguments().filter(|a| !a.is_global_set()) {
                    if let Some(long) = a.get_long() {
                        assert!(!globals.contains(&long), "--{long} of {} is also global", sub.get_name());
                    }
                }
                walk(sub, globals);
            }
        }
        walk(&cmd, &globals);
    }

    #[test]
    fn numbers_that_cannot_work_are_refused() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["enos"][..], args].concat());
        for rate in ["-1", "NaN", "inf", "0.0001", "1e400", "-0.5"] {
            assert!(parse(&["replay", "f.csv", "--rate", rate]).is_err(), "--rate {rate}");
        }
        for rate in ["0", "0.001", "2.5", "20000"] {
            assert!(parse(&["replay", "f.csv", "--rate", rate]).is_ok(), "--rate {rate}");
        }
        for bad in [
            &["listen", "--exec-timeout", "0"][..],
            &["listen", "--exec-timeout", "86401"],
            &["listen", "--count", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["listen", "--exec-timeout", "86400", "--count", "1"]).is_ok());
    }

    #[test]
    fn help_lists_every_subcommand_and_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for sub in Cli::command().get_subcommands() {
            assert!(help.contains(sub.get_name()), "{} not in --help", sub.get_name());
        }
        for code in ["130", "timed out", "usage error"] {
            assert!(help.contains(code), "{code}");
        }
    }
}
