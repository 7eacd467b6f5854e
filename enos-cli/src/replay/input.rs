//! Rows of a replay file: CSV with a header, or JSON lines. Each row knows its line, and
//! the reader knows how many bytes it has consumed, so that a checkpoint can point just
//! past the last row done.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use enos_transport_blocking::DeviceKeys;
use serde_json::{Map, Value};

use crate::cli::Format;
use crate::error::CliError;
use crate::parse;
use crate::settings::parse_keys;

/// One row: a device (`None`: the connected one), a time, measure points.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its line in the file (from 1).
    pub line: u64,
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

/// Reads the rows of a file, one at a time.
pub struct Reader {
    file: BufReader<File>,
    name: String,
    /// The format read.
    pub format: Format,
    /// The CSV header line, as written.
    pub header: Option<String>,
    columns: Option<Columns>,
    line: u64,
    offset: u64,
    /// The file's size when opened.
    pub size: u64,
    buf: String,
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
            line: 0,
            offset: 0,
            size,
            buf: String::new(),
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
            Format::Jsonl => r.rewind(0, 0)?,
        }
        Ok(r)
    }

    fn bad(&self, line: u64, why: impl Into<String>) -> CliError {
        CliError::input(format!("{}:{line}", self.name), why)
    }

    fn header_columns(&self, header: &str) -> Result<Columns, CliError> {
        let names = split_csv(header).map_err(|e| self.bad(self.line, e))?;
        let mut cols = Columns { count: names.len(), time: usize::MAX, device: None, points: Vec::new() };
        for (i, n) in names.iter().enumerate() {
            let n = n.trim();
            match n {
                "time" if cols.time == usize::MAX => cols.time = i,
                "device" if cols.device.is_none() => cols.device = Some(i),
                "" => return Err(self.bad(self.line, format!("column {} of the header has no name", i + 1))),
                _ if cols.points.iter().any(|(_, p)| p == n) || n == "time" || n == "device" => {
                    return Err(self.bad(self.line, format!("column {n:?} appears twice in the header")));
                }
                _ => cols.points.push((i, n.to_owned())),
            }
        }
        if cols.time == usize::MAX {
            return Err(self.bad(self.line, "the header has no time column (time,point1,point2,...)"));
        }
        if cols.points.is_empty() {
            return Err(self.bad(self.line, "the header names no measure point (time,point1,point2,...)"));
        }
        Ok(cols)
    }

    /// Goes to byte `offset`, just after line `line` (a checkpoint's place).
    ///
    /// # Errors
    ///
    /// [`CliError::Io`].
    pub fn rewind(&mut self, offset: u64, line: u64) -> Result<(), CliError> {
        self.file.seek(SeekFrom::Start(offset)).map_err(|e| CliError::io(format!("replay file {}", self.name), e))?;
        self.offset = offset;
        self.line = line;
        Ok(())
    }

    /// The bytes consumed so far: the end of the last line read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The last line read.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The next line, without its end of line.
    fn next_line(&mut self) -> Result<Option<String>, CliError> {
        self.buf.clear();
        let n = match self.file.read_line(&mut self.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(self.bad(self.line + 1, "not UTF-8 text"));
            }
            Err(e) => return Err(CliError::io(format!("replay file {}", self.name), e)),
        };
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        self.offset += n as u64;
        Ok(Some(self.buf.trim_end_matches(['\n', '\r']).to_owned()))
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
            let line = self.line;
            let row = match self.format {
                Format::Csv => self.csv_row(&text, line),
                Format::Jsonl => json_row(&text, line),
            };
            return row.map(Some).map_err(|e| self.bad(line, e));
        }
    }

    fn csv_row(&self, text: &str, line: u64) -> Result<Row, String> {
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
        Ok(Row { line, device, time, points })
    }
}

/// `{"time": ..., "device": "pk/dk"?, "points": {...}}`.
fn json_row(text: &str, line: u64) -> Result<Row, String> {
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
    Ok(Row { line, device, time, points })
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
        let rows = all(&mut r).unwrap();
        assert_eq!(rows[0].points, json!({"temp": 21.5, "label": [1, 2]}).as_object().unwrap().clone());
        assert_eq!((rows[0].line, rows[0].device.clone()), (2, None));
        assert_eq!(rows[1].line, 4);
        assert_eq!(rows[1].time, 1_704_067_200_000);
        assert_eq!(rows[1].device.as_ref().unwrap().to_string(), "gpk/s1");
        assert_eq!(rows[1].points, json!({"label": "hot"}).as_object().unwrap().clone());
        assert_eq!(r.offset(), r.size);
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
        let (offset, line) = (r.offset(), r.line());
        let mut again = Reader::open(&p, None).unwrap();
        again.rewind(offset, line).unwrap();
        let rest = all(&mut again).unwrap();
        assert_eq!(rest.iter().map(|r| (r.line, r.time)).collect::<Vec<_>>(), [(3, 2), (4, 3)]);
    }
}
