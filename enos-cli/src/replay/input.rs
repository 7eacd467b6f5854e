//! Rows of a replay file: CSV with a header, or JSON lines. The reader knows where it
//! stands (the bytes it has consumed, their line, and a hash of them), so that a
//! checkpoint can point just past the last row done, and tell whether the rows before it
//! changed since.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use enos_transport_blocking::DeviceKeys;
use serde_json::{Map, Value};

use crate::cli::Format;
use crate::error::CliError;
use crate::parse;
use crate::settings::parse_keys;

/// The longest line a replay file may have, its end of line left out.
pub const MAX_LINE: usize = 1024 * 1024;

/// One row: a device (`None`: the connected one), a time, measure points.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The sub-device it is for, when the file names one.
    pub device: Option<DeviceKeys>,
    /// Epoch milliseconds.
    pub time: u64,
    /// The points.
    pub points: Map<String, Value>,
}

/// The columns of a CSV file.
#[derive(Debug, Clone)]
struct Columns {
    count: usize,
    time: usize,
    device: Option<usize>,
    points: Vec<(usize, String)>,
}

/// Where a reader stands: just after line `line`, `offset` bytes in, and the hash of
/// those bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Bytes consumed.
    pub offset: u64,
    /// The last line consumed (0: none).
    pub line: u64,
    /// The FNV-1a hash (64 bits) of the bytes consumed.
    pub hash: u64,
}

impl Position {
    /// The start of a file.
    pub const START: Position = Position { offset: 0, line: 0, hash: FNV_OFFSET };
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// `hash` (FNV-1a, 64 bits) carried on over `bytes`.
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

/// Reads the rows of a file, one at a time.
pub struct Reader {
    file: BufReader<File>,
    name: String,
    /// The format read.
    pub format: Format,
    /// The CSV header line, as written.
    pub header: Option<String>,
    columns: Option<Columns>,
    at: Position,
    /// The file's size when opened.
    pub size: u64,
    buf: Vec<u8>,
}

impl Reader {
    /// Opens `path` and reads the CSV header. The format is `format`, else the file's
    /// extension (`.csv`; `.jsonl`, `.ndjson`, `.json`), else its first character (`{`:
    /// JSON lines).
    ///
    /// # Errors
    ///
    /// [`CliError::Io`] when the file cannot be read, [`CliError::Input`] for a bad header.
    pub fn open(path: &Path, format: Option<Format>) -> Result<Self, CliError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| CliError::io(format!("replay file {name}"), e))?;
        let size = file.metadata().map_err(|e| CliError::io(format!("replay file {name}"), e))?.len();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let by_ext = match ext.as_deref() {
            Some("csv") => Some(Format::Csv),
            Some("jsonl" | "ndjson" | "json") => Some(Format::Jsonl),
            _ => None,
        };
        let mut r = Reader {
            file: BufReader::new(file),
            name,
            format: format.or(by_ext).unwrap_or(Format::Csv),
            header: None,
            columns: None,
            at: Position::START,
            size,
            buf: Vec::new(),
        };
        let first = r.next_line()?;
        if format.is_none() && by_ext.is_none() {
            r.format = match &first {
                Some(l) if l.trim_start().starts_with('{') => Format::Jsonl,
                _ => Format::Csv,
            };
        }
        match r.format {
            Format::Csv => {
                let header = first
                    .ok_or_else(|| r.bad(1, "the file is empty: a CSV file starts with a header time,point1,..."))?;
                r.columns = Some(r.header_columns(&header)?);
                r.header = Some(header);
            }
            Format::Jsonl => r.rewind(Position::START)?,
        }
        Ok(r)
    }

    fn bad(&self, line: u64, why: impl Into<String>) -> CliError {
        CliError::input(format!("{}:{line}", self.name), why)
    }

    fn header_columns(&self, header: &str) -> Result<Columns, CliError> {
        let line = self.at.line;
        let names = split_csv(header).map_err(|e| self.bad(line, e))?;
        let mut cols = Columns { count: names.len(), time: usize::MAX, device: None, points: Vec::new() };
        for (i, n) in names.iter().enumerate() {
            let n = n.trim();
            match n {
                "time" if cols.time == usize::MAX => cols.time = i,
                "device" if cols.device.is_none() => cols.device = Some(i),
                "" => return Err(self.bad(line, format!("column {} of the header has no name", i + 1))),
                _ if cols.points.iter().any(|(_, p)| p == n) || n == "time" || n == "device" => {
                    return Err(self.bad(line, format!("column {n:?} appears twice in the header")));
                }
                _ => cols.points.push((i, n.to_owned())),
            }
        }
        if cols.time == usize::MAX {
            return Err(self.bad(line, "the header has no time column (time,point1,point2,...)"));
        }
        if cols.points.is_empty() {
            return Err(self.bad(line, "the header names no measure point (time,point1,point2,...)"));
        }
        Ok(cols)
    }

    /// Goes to `at` (a checkpoint's place, or one this reader stood at).
    ///
    /// # Errors
    ///
    /// [`CliError::Io`].
    pub fn rewind(&mut self, at: Position) -> Result<(), CliError> {
        self.file.seek(SeekFrom::Start(at.offset)).map_err(|e| self.io(e))?;
        self.at = at;
        Ok(())
    }

    /// Where the reader stands: just after the last line read.
    pub fn position(&self) -> Position {
        self.at
    }

    /// The hash of the file's first `len` bytes, as [`Position::hash`] has it (the reader
    /// is left anywhere: [`Reader::rewind`] it).
    ///
    /// # Errors
    ///
    /// [`CliError::Io`] when they cannot be read, or the file is shorter.
    pub fn hash_of_first(&mut self, len: u64) -> Result<u64, CliError> {
        self.file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        let mut hash = FNV_OFFSET;
        let mut read = 0u64;
        let mut left = (&mut self.file).take(len);
        loop {
            let chunk = match left.fill_buf() {
                Ok(c) => c,
                Err(e) => return Err(CliError::io(format!("replay file {}", self.name), e)),
            };
            if chunk.is_empty() {
                break;
            }
            hash = fnv1a(hash, chunk);
            let n = chunk.len();
            read += n as u64;
            left.consume(n);
        }
        if read < len {
            return Err(CliError::io(format!("replay file {}", self.name), format!("it has fewer than {len} bytes")));
        }
        Ok(hash)
    }

    fn io(&self, e: std::io::Error) -> CliError {
        CliError::io(format!("replay file {}", self.name), e)
    }

    /// The next line, without its end of line.
    fn next_line(&mut self) -> Result<Option<String>, CliError> {
        self.buf.clear();
        // Past the longest line (its end of line too) by a byte: a longer line is
        // refused without reading it all.
        let ceiling = MAX_LINE as u64 + 3;
        let n = match (&mut self.file).take(ceiling).read_until(b'\n', &mut self.buf) {
            Ok(n) => n,
            Err(e) => return Err(self.io(e)),
        };
        if n == 0 {
            return Ok(None);
        }
        let line = self.at.line + 1;
        let text = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.len() > MAX_LINE {
            return Err(self.bad(line, format!("line {line} longer than {} MiB", MAX_LINE >> 20)));
        }
        let text = std::str::from_utf8(text).map_err(|_| self.bad(line, "not UTF-8 text"))?.to_owned();
        self.at = Position { offset: self.at.offset + n as u64, line, hash: fnv1a(self.at.hash, &self.buf) };
        Ok(Some(text))
    }

    /// The next row; empty lines are skipped.
    ///
    /// # Errors
    ///
    /// [`CliError::Input`] with the file and line of a row that does not parse.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row>, CliError> {
        loop {
            let Some(text) = self.next_line()? else { return Ok(None) };
            if text.trim().is_empty() {
                continue;
            }
            let line = self.at.line;
            let row = match self.format {
                Format::Csv => self.csv_row(&text),
                Format::Jsonl => json_row(&text),
            };
            return row.map(Some).map_err(|e| self.bad(line, e));
        }
    }

    fn csv_row(&self, text: &str) -> Result<Row, String> {
        let Some(cols) = &self.columns else { return Err("no header".into()) };
        let cells = split_csv(text)?;
        if cells.len() != cols.count {
            return Err(format!("{} fields, and the header has {}", cells.len(), cols.count));
        }
        let cell = |i: usize| cells.get(i).map(|c| c.trim()).unwrap_or("");
        let time = parse::time(cell(cols.time)).map_err(|e| format!("time: {e}"))?;
        let device = match cols.device.map(cell) {
            None | Some("") => None,
            Some(d) => Some(parse_keys(d).map_err(|e| format!("device: {e}"))?),
        };
        let mut points = Map::new();
        for (i, name) in &cols.points {
            let c = cell(*i);
            if c.is_empty() {
                continue;
            }
            let v = serde_json::from_str(c).unwrap_or_else(|_| Value::String(c.to_owned()));
            points.insert(name.clone(), v);
        }
        Ok(Row { device, time, points })
    }
}

/// `{"time": ..., "device": "pk/dk"?, "points": {...}}`.
fn json_row(text: &str) -> Result<Row, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut o) = v else { return Err(format!("expected an object, got {}", parse::kind(&v))) };
    if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "time" | "device" | "points")) {
        return Err(format!("unknown field {k:?} (time, device, points)"));
    }
    let time = match o.remove("time") {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| format!("time {n} is not epoch milliseconds"))?,
        Some(Value::String(s)) => parse::time(&s).map_err(|e| format!("time: {e}"))?,
        Some(other) => return Err(format!("time: expected a number or a string, got {}", parse::kind(&other))),
        None => return Err("no \"time\"".into()),
    };
    let device = match o.remove("device") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_keys(&s).map_err(|e| format!("device: {e}"))?),
        Some(other) => return Err(format!("device: expected \"pk/dk\", got {}", parse::kind(&other))),
    };
    let points = match o.remove("points") {
        Some(Value::Object(p)) => p,
        Some(other) => return Err(format!("points: expected an object, got {}", parse::kind(&other))),
        None => return Err("no \"points\"".into()),
    };
    Ok(Row { device, time, points })
}

/// The fields of one CSV line (RFC 4180 quoting: `"a, b"`, `""` for a quote; no line
/// breaks inside a field).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, '"') => return Err(format!("a quote inside the unquoted field {:?}", fields.len() + 1)),
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, c) if was_quoted && !c.is_whitespace() => {
                return Err(format!("text after the closing quote of field {}", fields.len() + 1));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!("field {} opens a quote and never closes it", fields.len() + 1));
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("enos-cli-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn all(r: &mut Reader) -> Result<Vec<Row>, CliError> {
        let mut rows = Vec::new();
        while let Some(row) = r.next()? {
            rows.push(row);
        }
        Ok(rows)
    }

    #[test]
    fn csv_cells_are_json_or_text() {
        assert_eq!(split_csv(r#"a,"b, c","d ""q""",,"#).unwrap(), ["a", "b, c", r#"d "q""#, "", ""]);
        assert!(split_csv(r#"a,"b"#).is_err());
        assert!(split_csv(r#"a,b"c"#).is_err());
        let p =
            file("rows.csv", "time,temp,device,label\r\n1000,21.5,,\"[1,2]\"\n\n2024-01-01T00:00:00Z,,gpk/s1,hot\n");
        let mut r = Reader::open(&p, None).unwrap();
        assert_eq!(r.header.as_deref(), Some("time,temp,device,label"));
        assert_eq!(r.next().unwrap().map(|row| (r.position().line, row.device)), Some((2, None)));
        let mut r = Reader::open(&p, None).unwrap();
        let rows = all(&mut r).unwrap();
        assert_eq!(rows[0].points, json!({"temp": 21.5, "label": [1, 2]}).as_object().unwrap().clone());
        assert_eq!(r.position().line, 4);
        assert_eq!(rows[1].time, 1_704_067_200_000);
        assert_eq!(rows[1].device.as_ref().unwrap().to_string(), "gpk/s1");
        assert_eq!(rows[1].points, json!({"label": "hot"}).as_object().unwrap().clone());
        assert_eq!(r.position().offset, r.size);
        let whole = std::fs::read(&p).unwrap();
        assert_eq!(r.position().hash, fnv1a(Position::START.hash, &whole));
        assert_eq!(r.hash_of_first(r.size).unwrap(), r.position().hash);
    }

    #[test]
    fn a_bad_row_names_its_line() {
        for (text, line, why) in [
            ("time,temp\n1,2\n3\n", 3, "1 fields, and the header has 2"),
            ("time,temp\n1,2\nsoon,3\n", 3, "time: \"soon\" is neither"),
            ("time,temp,device\n1,2,nokeys\n", 2, "device: \"nokeys\" is not pk/dk"),
            ("temp\n1\n", 1, "the header has no time column"),
            ("", 1, "the file is empty"),
        ] {
            let p = file("bad.csv", text);
            let e = Reader::open(&p, None).and_then(|mut r| all(&mut r)).unwrap_err();
            assert!(e.to_string().contains(&format!("bad.csv:{line}: {why}")), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn json_lines_are_strict() {
        let p = file(
            "rows.data",
            "{\"time\":5,\"points\":{\"t\":1}}\n{\"time\":\"1970-01-01T00:00:01Z\",\"device\":\"a/b\",\"points\":{}}\n",
        );
        let mut r = Reader::open(&p, None).unwrap();
        assert_eq!(r.format, Format::Jsonl);
        let rows = all(&mut r).unwrap();
        assert_eq!((rows[0].time, rows[1].time), (5, 1000));
        for (text, why) in [
            ("{\"time\":5}", "no \"points\""),
            ("{\"time\":5,\"point\":{}}", "unknown field \"point\""),
            ("[1]", "expected an object"),
            ("{\"time\":-1,\"points\":{}}", "time -1 is not epoch milliseconds"),
            ("{", "not JSON"),
        ] {
            let p = file("bad.jsonl", &format!("{{\"time\":1,\"points\":{{}}}}\n{text}\n"));
            let e = Reader::open(&p, None).and_then(|mut r| all(&mut r)).unwrap_err();
            assert!(e.to_string().contains(&format!("bad.jsonl:2: {why}")), "{e}");
        }
    }

    #[test]
    fn rewinding_goes_on_after_the_checkpointed_row() {
        let p = file("resume.csv", "time,t\n1,1\n2,2\n3,3\n");
        let mut r = Reader::open(&p, None).unwrap();
        r.next().unwrap();
        let at = r.position();
        assert_eq!(at.line, 2);
        let mut again = Reader::open(&p, None).unwrap();
        assert_eq!(again.hash_of_first(at.offset).unwrap(), at.hash);
        again.rewind(at).unwrap();
        let rest = all(&mut again).unwrap();
        assert_eq!(rest.iter().map(|r| r.time).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(again.position().line, 4);
    }

    #[test]
    fn a_line_past_the_longest_is_refused_by_its_number() {
        let long = "9".repeat(MAX_LINE + 1);
        let p = file("long.csv", &format!("time,t\n1,1\n2,{long}\n3,3\n"));
        let e = Reader::open(&p, None).and_then(|mut r| all(&mut r)).unwrap_err();
        assert!(e.exit_code() == 2 && e.to_string().ends_with("long.csv:3: line 3 longer than 1 MiB"), "{e}");
        // The longest line there may be is read, with either end of line.
        let most = format!("2,{}", "9".repeat(MAX_LINE - 2));
        for eol in ["\n", "\r\n", ""] {
            let p = file("most.csv", &format!("time,t\n{most}{eol}"));
            assert_eq!(Reader::open(&p, None).and_then(|mut r| all(&mut r)).unwrap().len(), 1, "{eol:?}");
        }
        // Not UTF-8: said, with its line.
        let p = file("bin.csv", "time,t\n1,1\n");
        std::fs::write(&p, b"time,t\n1,\xff\n").unwrap();
        let e = Reader::open(&p, None).and_then(|mut r| all(&mut r)).unwrap_err();
        assert!(e.to_string().ends_with("bin.csv:2: not UTF-8 text"), "{e}");
    }
}
