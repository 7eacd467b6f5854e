//! `enos`: an EnOS IoT device (or gateway) on the command line. What `mosquitto_pub` and
//! `mosquitto_sub` are for MQTT, `enos` is for EnOS: one subcommand per device operation,
//! a listener that answers commands, and a replay that backfills history from a file. It
//! runs on the blocking driver (`enos-transport-blocking`): plain threads, no async
//! runtime.
//!
//! # Usage
//!
//! ```text
//! # Against the local cloud: `cargo run -p enos-sim -- serve` in another terminal.
//! export ENOS_URL=tcp://127.0.0.1:11883 ENOS_PRODUCT_KEY=demo_pk ENOS_DEVICE_KEY=demo_device
//! export ENOS_DEVICE_SECRET=demo_device_secret
//!
//! enos post '{"temp":21.5}'                        # measure points, now
//! enos post '{"temp":21.5}' --at 2024-05-01T12:00:00Z --qos 0
//! enos resume '{"temp":20.1}' --at 1714564800000   # recorded while offline
//! enos tag update site=lab floor=2 && enos tag get
//! enos attribute update '{"capacity":12.5}' && enos attribute get capacity
//! enos event overheat '{"level":2,"msg":"hot"}'
//! enos raw 0a0b0c                                  # prints the cloud's raw reply, in hex
//! enos log "pump started" --level info --module pump
//! enos network --rssi -67 --type 4G
//! enos ota version 1.0.3 && enos ota firmwares && enos ota progress 50 downloading
//! enos ota download -o fw.bin                      # the newest offered firmware, checked
//! enos ota download --version 1.1.0 -o fw.bin
//! enos connection-state '#001=connected' '#002=disconnected' --full --relation '#001=#002'
//! enos tsl                                         # the product's thing model
//! enos --json post '{"temp":21.5}'                 # one JSON document per result
//!
//! # Stored files, over the HTTP transport (`enos-sim serve --http 127.0.0.1:18081`)
//! export ENOS_URL=http://127.0.0.1:18081
//! enos file post '{"newFile":"local://photo.jpg"}'  # prints the URI the cloud keeps it under
//! enos file post '{"snapshot":{"img":"local://cam","label":"cam1"}}' --file cam=/tmp/cam.jpg
//! enos file download enos-connect://AbCdEfGhIjk.jpg -o photo.jpg
//! enos file download enos-connect://AbCdEfGhIjk.jpg --range 0-1023 > head.bin
//! enos file url enos-connect://AbCdEfGhIjk.jpg && enos file delete enos-connect://AbCdEfGhIjk.jpg
//!
//! # The product's integration channel: many devices through one connection
//! export ENOS_PRODUCT_SECRET=demo_product_secret
//! enos integration post '[{"deviceKey":"dev1","time":1714564800000,"measurepoints":{"temp":21.5}},
//!                         {"deviceKey":"dev2","events":{"overheat":{"level":2}}}]'
//! enos integration post entries.jsonl --batch 500
//!
//! # A gateway and its sub-devices (their secrets: --sub-secret, ENOS_SUB_SECRETS, a profile)
//! enos topo add demo_sub_pk/demo_sub_1 && enos topo get
//! enos login demo_sub_pk/demo_sub_1 demo_sub_pk/demo_sub_2   # one batch login
//! enos post --as demo_sub_pk/demo_sub_1 '{"temp":19}'        # logs it in first
//! enos register demo_sub_pk/pump3 --name "pump 3"             # secret kept, never printed
//! enos logout demo_sub_pk/demo_sub_1 && enos topo delete demo_sub_pk/demo_sub_1
//!
//! # Answer commands; each is printed as one JSON line with its reply
//! enos listen --answer service=reset:'{"done":true}' --answer set='{}'
//! enos listen --exec ./handler.sh          # command JSON on stdin, reply data on stdout
//!
//! # Backfill history, resumable
//! enos replay history.csv --batch 100 --rate 5000
//! enos replay history.csv --resume         # after Ctrl-C or a crash
//! ```
//!
//! `enos connect` checks the settings and credentials (connects, says how, disconnects).
//! `enos --help` lists every subcommand; `enos SUBCOMMAND --help` its arguments.
//!
//! # Settings
//!
//! Each connection setting comes from a flag, else an `ENOS_*` environment variable, else
//! the profile (`--profile NAME` or `ENOS_PROFILE`; a profile named `default` is used when
//! none is asked for) of the profile file: `$ENOS_CONFIG`, else
//! `$XDG_CONFIG_HOME/enos/profiles.toml`, else `~/.config/enos/profiles.toml`:
//!
//! | flag | environment | profile key |
//! |---|---|---|
//! | `--url` (`tcp://`, `ssl://`; `http://`, `https://` for the HTTP transport) | `ENOS_URL` | `url` |
//! | `--product-key`, `--device-key` | `ENOS_PRODUCT_KEY`, `ENOS_DEVICE_KEY` | `product_key`, `device_key` |
//! | `--device-secret` | `ENOS_DEVICE_SECRET` | `device_secret` |
//! | `--product-secret` | `ENOS_PRODUCT_SECRET` | `product_secret` |
//! | `--cert`, `--key` (PEM) or `--pfx` + `--passphrase` | `ENOS_CERT`, `ENOS_KEY`, `ENOS_PFX`, `ENOS_PASSPHRASE` | `cert`, `key`, `pfx`, `passphrase` |
//! | `--ca`, `--server-name` | `ENOS_CA`, `ENOS_SERVER_NAME` | `ca`, `server_name` |
//! | `--timeout`, `--connect-timeout` (seconds, 30) | `ENOS_TIMEOUT`, `ENOS_CONNECT_TIMEOUT` | `timeout`, `connect_timeout` |
//! | `--sub-secret PK/DK=S`, `--sub-product-secret PK=S` | `ENOS_SUB_SECRETS`, `ENOS_SUB_PRODUCT_SECRETS` (comma-separated) | `[NAME.sub_devices]`, `[NAME.sub_products]` |
//! | `--secrets-dir` | `ENOS_SECRETS_DIR` | `secrets_dir` |
//!
//! ```toml
//! [lab]
//! url = "ssl://broker.example:18883"
//! product_key = "pk"
//! device_key = "dk"
//! cert = "certs/dk.pem"   # relative to this file
//! key = "certs/dk.key"
//! ca = "certs/ca.pem"
//! [lab.sub_devices]
//! "sub_pk/sub_1" = "secret of sub_1"
//! ```
//!
//! A missing setting is named with its three ways (`missing setting: the broker URL; give
//! it with --url, the environment variable ENOS_URL, or `url` in a profile`); an unknown
//! key in a profile is an error, not silently ignored.
//!
//! **Authentication.** A client certificate (`--cert`/`--key` or `--pfx`, over `ssl://`
//! with `--ca`) makes it X.509; else a device secret, secure mode 2; else a product
//! secret, dynamic activation (secure mode 3). The secret the cloud issues at activation
//! is written to the secrets folder (`--secrets-dir`, default `secrets/` beside the
//! profile file; one file per device, mode 0600, written before the cloud's push is
//! acknowledged) and used in mode 2 from then on. So are the secrets of sub-devices that
//! `register` registers or that activate at login. Before anything that may have the
//! cloud issue a secret is sent (an activation, a registration, the login or topology
//! addition of a sub-device that activates), the secrets folder is made if need be and
//! tried with a file: a folder that cannot take the secret stops the command first (exit
//! 5), rather than losing a secret the cloud issued.
//!
//! **Secrets are never shown**: not in `--help` (no defaults are taken from the
//! environment there), errors, `Debug` or `-v` output, which says "device secret: set
//! (from ENOS_DEVICE_SECRET)". Prefer the environment or a profile to the secret flags,
//! which other users can read in the process list.
//!
//! # Output
//!
//! Text for a person by default; `--json` prints one JSON document per result on standard
//! output (the reply's `{code, id, message, data}`, or a command's own shape), and an error
//! as `{"error": {"kind", "message", "exit", "code"?}}`. Notes (`-v`), `listen`'s
//! connection news and `replay`'s progress line (when standard error is a terminal) go to
//! standard error. `-vv` adds the SDK's log (`RUST_LOG` refines it).
//!
//! `--no-reply` sends without waiting for the cloud's reply; a command whose output is the
//! reply (`tag get`, `attribute get`, `raw`, `tsl`, `ota firmwares`, `ota download`,
//! `integration raw`), and `replay`, whose checkpoint moves over answered rows, refuse it
//! (exit 2).
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | the cloud answered with an error code (`replay`: it refused some rows; `login`: some sub-devices; `integration post`: some requests), or does not have what was asked (a stored file, a firmware version), or what it sent failed its check (a firmware's digest or size) |
//! | 2 | usage error: a bad argument, a missing or invalid setting, bad input (JSON, hex, a CSV or JSON lines row, with its line) |
//! | 3 | could not connect or authenticate (refused credentials, unreachable broker, TLS), or the connection was lost |
//! | 4 | timed out: no connection or no reply within the timeout |
//! | 5 | local I/O error: a file, the `--exec` program |
//! | 130 | interrupted (Ctrl-C or SIGTERM) before the work was done, for `replay` (`--resume` goes on) and `integration post`; `listen` ends with 0, and the other commands end at the signal itself |
//!
//! # Stored files: `file`
//!
//! Over the HTTP transport only (an `http://` or `https://` URL, the cloud's device HTTP
//! endpoint; on an MQTT URL each is a usage error, exit 2, that says so). `file post`
//! posts measure points whose values are files: each value `"local://NAME"` (of a point,
//! or of a member of a struct point) is the file `--file NAME=PATH` gives, else the file
//! `NAME`; every file is read before anything connects (at most 100 MB each), goes up
//! with the request, and the URI the cloud keeps it under (`enos-connect://...`, the
//! point's value from then on) is printed. `file download URI` writes the file to
//! standard output, or with `-o PATH` to `PATH.part`, renamed to `PATH` once complete
//! (a failed download does not touch `PATH`); `--range START-END`, `START-` or `-N`
//! takes only those bytes. Either way it goes 256 KiB per exchange, never more in
//! memory; a download interrupted (Ctrl-C, SIGTERM) leaves `PATH.part` behind, which the
//! next download to `PATH` replaces. `file url URI` prints a URL that downloads it
//! without a session; `file delete URI` deletes it. A file the cloud does not have exits
//! 1 (`"kind": "not_found"`). `--category ota` names a firmware rather than a point's
//! file. A file to post must be a regular file.
//!
//! # Firmware: `ota download`
//!
//! Downloads a firmware the cloud offers (`ota firmwares`): the one of `--version`, else
//! the highest version (compared part by part, numbers as numbers); or, with `--firmware
//! JSON`, the one an upgrade push carries (`{version, signMethod, sign, fileUrl,
//! fileSize}`, the `firmware` that `listen` prints for a push). The SDK checks the
//! digest (md5, sha1 or sha256) and the size as the bytes arrive, writes them to
//! `PATH.part` and renames it to `PATH` only once both match; the download's progress
//! goes to the cloud, and to standard error as a line when it is a terminal. A firmware
//! that fails its check exits 1 (`"kind": "check_failed"`) and leaves nothing behind; an
//! interrupted download (Ctrl-C, SIGTERM) leaves `PATH.part`. A file of the cloud's
//! storage needs the HTTP transport; a plain `http://` or `https://` file URL is fetched
//! on either.
//!
//! # The integration channel: `integration`
//!
//! `integration post` and `integration raw` connect as the product's message-integration
//! channel (secure mode 4): the URL, the product key and the product secret (flags,
//! `ENOS_*` or a profile, as for a device); the device key and secret are not used, and
//! the product must have its channel. The entries are JSON, a file, or `-` for standard
//! input: a JSON array, or one entry per line, each `{"deviceKey", "time"?, and one of
//! "measurepoints", "events", "attributes"}` (a time is epoch milliseconds or RFC 3339;
//! attributes have none). They are checked first (a bad one is named by its index, or
//! its file and line; exit 2), then sent `--batch` per request, measure points first,
//! then events, then attributes. The cloud takes a request whole or refuses it with its
//! first error (1257 device not found, 1204 model validation failed); every request is
//! sent, each is printed with its answer as it comes (with `--json`, all in one document
//! at the end), and the exit code is 1 if one was refused. A request that gets no answer
//! (timeout, connection lost) stops the post: what was answered is printed, then the
//! error. Ctrl-C or SIGTERM stops it after the request in flight (exit 130).
//!
//! # `listen`
//!
//! Stays connected (reconnecting by itself) and answers every command: fixed answers
//! (`--answer service=ID:REPLY`, `service=*:...`, `set=`, `get=`, `raw=HEX`, `ota=`,
//! `device=`, `sub-devices=`, `traffic=`, where REPLY is JSON data or
//! `error=CODE[:MESSAGE]`), else the `--exec` program, else the SDK's default reply (1101,
//! none for raw). The program gets the command as one JSON line on standard input
//! (`{"device","id","kind":"service","service","params"}`, `"kind":"set","points"`, ...)
//! and prints the reply's data as JSON (hex for raw); a non-zero exit (its last line of
//! standard error is quoted), a run past `--exec-timeout` (1 to 86,400 s), more than 1 MiB
//! of output or output that is not JSON answers 1102 with that reason. Commands that come
//! together are handled together: up to 4 runs of the program at once, so it must not
//! count on running alone. A bare program name is looked for on `PATH` when `listen`
//! starts, and one that is not there exits 5. Each command is printed as one JSON line
//! with a `reply`. It ends (exit 0) at Ctrl-C or SIGTERM, after `--count N` commands, or
//! once its standard output is closed (`enos listen | head -3`).
//!
//! # `replay`
//!
//! Reads CSV (`time,point1,...` and an optional `device` column of `pk/dk`; a cell that
//! is JSON is that value, other text a string, an empty cell no value) or JSON lines
//! (`{"time", "device"?, "points"}`); times are epoch milliseconds or RFC 3339. Every row
//! is checked first (a bad one is named by file and line, exit 2; `--dry-run` stops
//! there). Rows go out `--batch` per request (a single `resume_measurepoint` for one row of
//! the device itself, else `batch_resume_measurepoint` with `allowOfflineSubDevice` when
//! an entry names a sub-device), `--window` requests in flight, at most `--rate` rows a
//! second (`--rate`: 0 for no limit, else 0.001 or more). A line longer than 1 MiB is bad
//! input. After each answered request the checkpoint `FILE.enos-progress` is renamed into
//! place, and synced to the disk at most once a second and at the end (it is first written
//! before anything connects, so a folder where it cannot be written stops the replay
//! before a row is sent); it advances only over requests all of whose predecessors were
//! answered. A power loss may take it back to its last sync.
//! A refused request counts its rows under the cloud's code and is not sent again;
//! `--skip-invalid` has the cloud drop invalid points instead. Ctrl-C stops sending,
//! waits for the requests in flight and keeps the checkpoint (exit 130); `--resume` goes
//! on from it without sending an answered row again. Two cases send rows again: after a
//! crash, the requests that were in flight; after a request that failed (no reply in
//! time, the connection lost), the requests after it, answered or not, since the
//! checkpoint stops before the failed one. A resume of the same point and time overwrites
//! itself. The checkpoint keeps a hash of the file's bytes before it, and `--resume`
//! refuses a file whose rows before it changed (exit 2). A checkpoint left by an earlier
//! run is never ignored silently: `--resume` or `--restart`. The summary gives rows sent,
//! accepted, refused by code, elapsed time and rows per second (and totals over the
//! resumed runs).
//!
//! # Replay figures
//!
//! 100,000 rows of two points (`time,temp,humidity`, 2.4 MB of CSV) to the local cloud on
//! loopback; release builds, a 2-core x86-64 machine; the ranges cover three runs:
//! `cargo run --release -p enos-sim -- serve --record 0` in one terminal, `cargo run
//! --release -p enos-cli -- replay rows.csv --batch B --window W` in another. Elapsed is
//! the sending, from the first request to the last reply; rows/s is rows answered over
//! that time.
//!
//! | `--batch` | `--window` | elapsed | rows/s |
//! |---|---|---|---|
//! | 1 (single resumes) | 1 | 7.7 – 10.5 s | 9,500 – 12,900 |
//! | 1 (single resumes) | 8 | 4.6 – 5.2 s | 19,100 – 21,600 |
//! | 10 | 8 | 0.56 – 0.79 s | 126,000 – 178,000 |
//! | 100 | 1 | 0.23 – 0.32 s | 315,000 – 437,000 |
//! | 100 (default) | 8 (default) | 0.19 – 0.25 s | 403,000 – 514,000 |
//! | 1,000 | 8 | 0.21 – 0.31 s | 318,000 – 483,000 |
//!
//! The whole default command (every row checked first, connect, send, summary) takes
//! 0.48 s of wall time and 7.7 MB of memory at most; `--rate 20000` takes 5.0 s
//! (20,016 rows/s). A round trip per row is what limits single resumes: batches of 100
//! rows and a few requests in flight make the cloud's JSON parsing the limit. A debug
//! build replays about 70,000 – 100,000 rows/s in batches of 40.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cli;
mod commands;
mod error;
mod files;
mod firmware;
mod fsio;
mod integration;
mod listen;
mod output;
mod parse;
mod replay;
mod session;
mod settings;
mod signals;

use std::process::ExitCode;

use clap::Parser;
use enos_transport_blocking::Qos;

use crate::cli::{Cli, Cmd};
use crate::commands::Prepared;
use crate::error::CliError;
use crate::output::Out;
use crate::session::{Sending, Session};
use crate::settings::{parse_keys, process_env, Settings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out { json: cli.json, verbose: cli.verbose };
    if cli.verbose > 1 {
        logs(cli.verbose);
    }
    match run(&cli, out) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("enos: {e}");
            if out.json {
                out.result("", &e.to_json());
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// The SDK's log on standard error: `-vv` debug, `-vvv` trace; `RUST_LOG` refines it.
fn logs(verbose: u8) {
    let level = if verbose > 2 { "trace" } else { "debug" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "enos={level},enos_client={level},enos_proto={level},enos_transport_blocking={level}"
        ))
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn run(cli: &Cli, out: Out) -> Result<u8, CliError> {
    let as_device =
        cli.as_device.as_deref().map(|d| parse_keys(d).map_err(|e| CliError::input("--as", e))).transpose()?;
    let sending =
        Sending { qos: if cli.qos == 0 { Qos::AtMostOnce } else { Qos::AtLeastOnce }, need_reply: !cli.no_reply };
    let settings = || -> Result<Settings, CliError> {
        let s = Settings::resolve(&cli.conn, &process_env)?;
        if out.verbose > 0 {
            for line in s.describe() {
                out.note(&line);
            }
        }
        Ok(s)
    };
    let no_reply =
        |what: &str, why: &str| CliError::Usage(format!("--no-reply does not apply to `{what}`: {why}; leave it out"));
    match &cli.command {
        Cmd::Listen(args) => listen::run(args, &settings()?, out, sending, as_device.as_ref()),
        Cmd::Replay(_) if cli.no_reply => Err(no_reply(
            "replay",
            "its checkpoint moves over the rows the cloud answered, and without replies none is",
        )),
        Cmd::Replay(args) => replay::run(args, settings, out, sending, as_device.as_ref()),
        other => {
            // Every argument is checked before anything connects.
            let Some(op) = Prepared::from(other, out)? else {
                return Err(CliError::Usage("not a one-shot command".into()));
            };
            if let (true, Some(what)) = (cli.no_reply, op.reply_is_output()) {
                return Err(no_reply(what, "what it prints is the cloud's reply"));
            }
            if let (Some(_), Some(why)) = (&as_device, op.not_for_sub_devices()) {
                return Err(CliError::Usage(format!("--as does not apply: {why}")));
            }
            let settings = settings()?;
            if let Some(what) = op.issues_secrets(&settings) {
                settings.secrets_ready(&what)?;
            }
            let session = if op.is_channel() {
                Session::open_channel(&settings, out, sending)?
            } else {
                Session::open(&settings, out, sending, as_device.as_ref())?
            };
            let result = commands::run(op, &session, &settings, out);
            session.close();
            result
        }
    }
}
