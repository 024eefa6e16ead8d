//! CSV uploads, streamed: files of gigabytes pass through a fixed read buffer and one
//! row's worth of cells, never held whole.
//!
//! Parsing is `csv-core`'s state machine (the engine of the `csv` crate, without its
//! blocking I/O) fed from any `tokio` reader. Owning the buffers is what keeps memory
//! bounded: a row longer than [`MAX_ROW_BYTES`] — typically a quote left open, which
//! would make the rest of the file one cell — is skipped and reported instead of grown.

use chrono_tz::Tz;
use csv_core::ReadRecordResult;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::model::{find_field, DataField};
use super::participant::{CheckedParticipant, ParticipantInput};

/// How much is read from the upload at a time.
const READ_CHUNK: usize = 64 * 1024;
/// The longest row kept; longer ones are reported and skipped.
pub const MAX_ROW_BYTES: usize = 1024 * 1024;
/// The most cells a row may have.
pub const MAX_COLUMNS: usize = 1024;

/// A data row that could not be imported; the upload goes on with the next one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {row}: {reason}")]
pub struct RowError {
    /// The row as a spreadsheet numbers it: the header is row 1, the first data row 2,
    /// and a quoted cell spanning several lines still makes one row.
    pub row: usize,
    pub reason: String,
}

/// What stops the whole upload.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The header row does not fit the campaign's fields; every problem in one message.
    #[error("header: {0}")]
    Header(String),
    #[error("reading the upload failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What a CSV column feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Field(String),
    Timezone,
    ObjectId,
}

/// The outcome of reading one record.
enum Read {
    Record,
    TooLong,
    TooWide,
    End,
}

/// Reads an upload row by row: [`CsvImport::open`] checks the header, then
/// [`CsvImport::next_row`] yields each data row checked as a participant.
pub struct CsvImport<R> {
    input: Input<R>,
    parser: csv_core::Reader,
    record: Record,
    columns: Vec<Column>,
    fields: Vec<DataField>,
    tz_default: Tz,
    /// Records read so far, the header included.
    row: usize,
}

impl<R: AsyncRead + Unpin> CsvImport<R> {
    /// Reads and checks the header row: every column must name an importable field (or
    /// be `timezone` / `object_id`), once, and every required field needs a column.
    /// Names match case-insensitively; a UTF-8 byte-order mark is skipped.
    pub async fn open(
        reader: R,
        fields: &[DataField],
        tz_default: Tz,
    ) -> Result<CsvImport<R>, CsvError> {
        let mut import = CsvImport {
            input: Input::new(reader),
            parser: csv_core::Reader::new(),
            record: Record::new(),
            columns: Vec::new(),
            fields: fields.to_vec(),
            tz_default,
            row: 0,
        };
        // The parser only recognises a byte-order mark it sees whole in its first input,
        // and takes a first input holding nothing but the mark for the end of the file.
        import.input.fill_at_least(4).await?;
        match import.read_record().await? {
            Read::Record => {}
            Read::End => return Err(CsvError::Header("the file is empty".into())),
            Read::TooLong | Read::TooWide => {
                return Err(CsvError::Header("the header row is too long".into()))
            }
        }
        import.row = 1;
        import.columns = header_columns(&import.record, fields).map_err(CsvError::Header)?;
        Ok(import)
    }

    /// The next data row: `Ok(None)` at the end of the file, `Ok(Some(Err(_)))` for a
    /// row to report and skip, `Err(_)` when the upload itself cannot be read further.
    /// Rows whose cells are all empty are skipped silently (spreadsheets export them).
    pub async fn next_row(
        &mut self,
    ) -> Result<Option<Result<CheckedParticipant, RowError>>, CsvError> {
        loop {
            let read = self.read_record().await?;
            let skipped = match read {
                Read::End => return Ok(None),
                Read::Record => None,
                Read::TooLong => Some(format!(
                    "the row is longer than {MAX_ROW_BYTES} bytes (is a quote left open?)"
                )),
                Read::TooWide => Some(format!("the row has more than {MAX_COLUMNS} cells")),
            };
            self.row += 1;
            let row = self.row;
            if let Some(reason) = skipped {
                return Ok(Some(Err(RowError { row, reason })));
            }
            let checked = match self.row_input() {
                Ok(None) => continue,
                Ok(Some(input)) => input
                    .check(&self.fields, self.tz_default)
                    .map_err(|errs| errs.join("; ")),
                Err(reason) => Err(reason),
            };
            return Ok(Some(checked.map_err(|reason| RowError { row, reason })));
        }
    }

    /// Reads one record into `self.record`. Past the size limits the rest of the record
    /// is still parsed (to find where the next one starts) but its bytes are dropped.
    async fn read_record(&mut self) -> std::io::Result<Read> {
        let CsvImport {
            input,
            parser,
            record,
            ..
        } = self;
        record.len = 0;
        record.cells = 0;
        let mut overflow: Option<Read> = None;
        loop {
            if input.is_empty() && !input.eof {
                input.fill().await?;
            }
            let (out, ends) = if overflow.is_some() {
                (&mut record.bytes[..], &mut record.ends[..])
            } else {
                (
                    &mut record.bytes[record.len..],
                    &mut record.ends[record.cells..],
                )
            };
            let (res, nin, nout, nend) = parser.read_record(input.available(), out, ends);
            input.consume(nin);
            if overflow.is_none() {
                record.len += nout;
                record.cells += nend;
            }
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull if overflow.is_none() => {
                    if !record.grow_bytes() {
                        overflow = Some(Read::TooLong);
                    }
                }
                ReadRecordResult::OutputEndsFull if overflow.is_none() => {
                    if !record.grow_ends() {
                        overflow = Some(Read::TooWide);
                    }
                }
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {}
                ReadRecordResult::Record => return Ok(overflow.unwrap_or(Read::Record)),
                ReadRecordResult::End => return Ok(Read::End),
            }
        }
    }

    /// The current record as an API-style input; `None` for a row of empty cells.
    fn row_input(&self) -> Result<Option<ParticipantInput>, String> {
        if self
            .record
            .cells()
            .all(|c| c.iter().all(u8::is_ascii_whitespace))
        {
            return Ok(None);
        }
        if self.record.cells != self.columns.len() {
            return Err(format!(
                "the row has {} cells, the header has {}",
                self.record.cells,
                self.columns.len()
            ));
        }
        let mut input = ParticipantInput::default();
        for (i, (cell, column)) in self.record.cells().zip(&self.columns).enumerate() {
            let text = std::str::from_utf8(cell)
                .map_err(|_| format!("cell {} is not valid UTF-8", i + 1))?
                .trim();
            if text.is_empty() {
                continue;
            }
            match column {
                Column::Field(name) => {
                    input
                        .attributes
                        .insert(name.clone(), Value::String(text.to_string()));
                }
                Column::Timezone => input.timezone = Some(text.to_string()),
                Column::ObjectId => input.object_id = Some(text.to_string()),
            }
        }
        Ok(Some(input))
    }

    /// Bytes held for parsing, whatever the size of the upload.
    #[cfg(test)]
    fn buffered_bytes(&self) -> usize {
        self.input.buf.len()
            + self.record.bytes.capacity()
            + self.record.ends.capacity() * std::mem::size_of::<usize>()
    }
}

/// Maps header cells to columns, or says everything wrong with them at once.
fn header_columns(record: &Record, fields: &[DataField]) -> Result<Vec<Column>, String> {
    let mut columns = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let (mut unknown, mut not_imported, mut problems) = (Vec::new(), Vec::new(), Vec::new());
    for (i, cell) in record.cells().enumerate() {
        let Ok(text) = std::str::from_utf8(cell) else {
            problems.push(format!("column {} is not valid UTF-8", i + 1));
            continue;
        };
        let name = text.trim().to_ascii_lowercase();
        if name.is_empty() {
            problems.push(format!("column {} has no name", i + 1));
            continue;
        }
        if seen.contains(&name) {
            problems.push(format!("column {name:?} appears more than once"));
            continue;
        }
        seen.push(name.clone());
        let column = match name.as_str() {
            "timezone" => Column::Timezone,
            "object_id" => Column::ObjectId,
            _ => match find_field(fields, &name) {
                None => {
                    unknown.push(format!("{name:?}"));
                    continue;
                }
                Some(f) if !f.import => {
                    not_imported.push(format!("{name:?}"));
                    continue;
                }
                Some(_) => Column::Field(name),
            },
        };
        columns.push(column);
    }
    if !unknown.is_empty() {
        problems.push(format!(
            "unknown columns {} (not fields of this campaign)",
            unknown.join(", ")
        ));
    }
    if !not_imported.is_empty() {
        problems.push(format!(
            "columns {} are fields with import off",
            not_imported.join(", ")
        ));
    }
    let missing: Vec<String> = fields
        .iter()
        .filter(|f| f.required && !seen.contains(&f.name))
        .map(|f| format!("{:?}", f.name))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "required columns {} are missing",
            missing.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(columns)
    } else {
        Err(problems.join("; "))
    }
}

/// The read side: a fixed buffer refilled from the upload.
struct Input<R> {
    reader: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: AsyncRead + Unpin> Input<R> {
    fn new(reader: R) -> Input<R> {
        Input {
            reader,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The unread bytes; empty only at the end of the upload, which tells the parser so.
    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Reads once into the free end of the buffer (moving unread bytes to its front).
    async fn fill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.reader.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(())
    }

    async fn fill_at_least(&mut self, n: usize) -> std::io::Result<()> {
        while self.end - self.start < n && !self.eof {
            self.fill().await?;
        }
        Ok(())
    }
}

/// One record's cell bytes and cell end offsets, grown up to the limits.
struct Record {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    len: usize,
    cells: usize,
}

impl Record {
    fn new() -> Record {
        Record {
            bytes: vec![0; 4096],
            ends: vec![0; 64],
            len: 0,
            cells: 0,
        }
    }

    fn cells(&self) -> impl Iterator<Item = &[u8]> {
        let ends = &self.ends[..self.cells];
        ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &self.bytes[start..end]
        })
    }

    /// Doubles the byte buffer up to [`MAX_ROW_BYTES`]; false once it is there.
    fn grow_bytes(&mut self) -> bool {
        let size = self.bytes.len();
        if size >= MAX_ROW_BYTES {
            return false;
        }
        self.bytes.resize((size * 2).min(MAX_ROW_BYTES), 0);
        true
    }

    /// Doubles the cell buffer up to [`MAX_COLUMNS`]; false once it is there.
    fn grow_ends(&mut self) -> bool {
        let size = self.ends.len();
        if size >= MAX_COLUMNS {
            return false;
        }
        self.ends.resize((size * 2).min(MAX_COLUMNS), 0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::model::{CustomerKey, FieldLevel, FieldType};
    use serde_json::json;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncWriteExt, ReadBuf};

    fn field(name: &str, field_type: FieldType, level: FieldLevel) -> DataField {
        DataField {
            title: String::new(),
            name: name.into(),
            description: String::new(),
            field_type,
            level,
            import: true,
            required: false,
        }
    }

    fn fields() -> Vec<DataField> {
        vec![
            field("name", FieldType::String, FieldLevel::CustomerProfile),
            DataField {
                required: true,
                ..field("due_date", FieldType::Date, FieldLevel::Participant)
            },
            field("amount", FieldType::Float, FieldLevel::Participant),
            field("remind_at", FieldType::Datetime, FieldLevel::Participant),
            DataField {
                import: false,
                ..field("score", FieldType::Int, FieldLevel::Participant)
            },
        ]
    }

    type Rows = Vec<Result<CheckedParticipant, RowError>>;

    async fn read_all<R: AsyncRead + Unpin>(reader: R) -> Result<Rows, CsvError> {
        let mut import = CsvImport::open(reader, &fields(), Tz::UTC).await?;
        let mut rows = Vec::new();
        while let Some(row) = import.next_row().await? {
            rows.push(row);
        }
        Ok(rows)
    }

    async fn rows(csv: &[u8]) -> Rows {
        read_all(csv).await.unwrap()
    }

    fn header_error(result: Result<Rows, CsvError>) -> String {
        match result {
            Err(CsvError::Header(msg)) => msg,
            other => panic!("expected a header error, got {other:?}"),
        }
    }

    /// A reader that hands out one byte per read, to cut every token in half.
    struct Trickle(Vec<u8>, usize);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let at = self.1;
            if let Some(&b) = self.0.get(at) {
                buf.put_slice(&[b]);
                self.1 += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn reads_quotes_embedded_newlines_and_crlf() {
        let csv = b"email,name,due_date,amount\r\n\
            a@x.io,\"Smith, Ann\",2026-06-30,1.5\r\n\
            b@x.io,\"Bob \"\"the builder\"\"\",2026-07-01,\r\n\
            c@x.io,\"two\r\nlines\",2026-07-02,3\r\n\
            d@x.io,\"three\nmore\nlines\",2026-07-03,4\n\
            e@x.io,Eve,2026-07-04,5";
        let rows = rows(csv).await;
        assert_eq!(rows.len(), 5);
        let ok: Vec<CheckedParticipant> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(ok[0].customer["name"], json!("Smith, Ann"));
        assert_eq!(ok[0].participant["amount"], json!(1.5));
        assert_eq!(ok[1].customer["name"], json!("Bob \"the builder\""));
        // An empty cell is no value at all.
        assert!(!ok[1].participant.contains_key("amount"));
        assert_eq!(ok[2].customer["name"], json!("two\r\nlines"));
        assert_eq!(ok[3].customer["name"], json!("three\nmore\nlines"));
        assert_eq!(ok[4].key, CustomerKey::Email("e@x.io".into()));
        assert_eq!(ok[4].participant["due_date"], json!("2026-07-04"));
    }

    #[tokio::test]
    async fn skips_a_byte_order_mark_even_split_across_reads() {
        let csv = "\u{feff}\"Email\",Due_Date\r\nann@x.io,2026-06-30\r\n";
        let whole = rows(csv.as_bytes()).await;
        let trickled = read_all(Trickle(csv.as_bytes().to_vec(), 0)).await.unwrap();
        for rows in [whole, trickled] {
            assert_eq!(rows.len(), 1);
            assert_eq!(
                rows[0].as_ref().unwrap().key,
                CustomerKey::Email("ann@x.io".into())
            );
        }
    }

    #[tokio::test]
    async fn bad_rows_are_reported_with_their_numbers_and_good_rows_go_on() {
        let csv = b"email,name,due_date,amount\n\
            ok1@x.io,One,2026-06-30,1\n\
            not-an-email,Two,2026-06-30,2\n\
            ok3@x.io,\"Three\nspans lines\",2026-06-30,3\n\
            ok4@x.io,Four,,4\n\
            ok5@x.io,Five,2026-06-30\n\
            ok6@x.io,Six,2026-13-01,lots\n\
            ,,,\n\
            ,Eight,2026-06-30,8\n\
            ok9@x.io,Nine,2026-06-30,9\n";
        let rows = rows(csv).await;
        let summary: Vec<Result<String, RowError>> = rows
            .into_iter()
            .map(|r| r.map(|p| p.key.value().to_string()))
            .collect();
        let err = |row: usize, reason: &str| {
            Err(RowError {
                row,
                reason: reason.into(),
            })
        };
        assert_eq!(
            summary,
            vec![
                Ok("ok1@x.io".into()),
                err(3, "email: \"not-an-email\" is not an e-mail address"),
                Ok("ok3@x.io".into()),
                err(5, "due_date: is required"),
                err(6, "the row has 3 cells, the header has 4"),
                err(
                    7,
                    "amount: \"lots\" is not a number; due_date: \"2026-13-01\" is not a date (YYYY-MM-DD)"
                ),
                // Row 8 has only empty cells and is skipped.
                err(9, "a participant needs external_id, email or phone"),
                Ok("ok9@x.io".into()),
            ]
        );
        assert_eq!(
            RowError {
                row: 3,
                reason: "x".into()
            }
            .to_string(),
            "row 3: x"
        );
    }

    #[tokio::test]
    async fn timezone_and_object_id_columns() {
        let csv = b"external_id,due_date,remind_at,timezone,object_id\n\
            c1,2026-06-30,2026-06-29 09:00,America/New_York,loan-1\n\
            c1,2026-06-30,2026-06-29 09:00,,loan-2\n\
            c2,2026-06-30,,Nowhere/Special,\n";
        let rows = rows(csv).await;
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.timezone, Some(Tz::America__New_York));
        assert_eq!(first.object_id.as_deref(), Some("loan-1"));
        assert_eq!(
            first.participant["remind_at"],
            json!("2026-06-29T13:00:00Z")
        );
        let second = rows[1].as_ref().unwrap();
        assert_eq!(second.timezone, None);
        assert_eq!(
            second.participant["remind_at"],
            json!("2026-06-29T09:00:00Z")
        );
        let third = rows[2].as_ref().unwrap_err();
        assert_eq!(third.row, 4);
        assert!(third.reason.starts_with("timezone: \"Nowhere/Special\""));
    }

    #[tokio::test]
    async fn header_problems_come_in_one_error() {
        let msg = header_error(
            read_all(
                &b"email,colour,due_date,Shoe_Size,score,Email\nx@y.io,red,2026-01-01,9,1,z@y.io\n"
                    [..],
            )
            .await,
        );
        assert_eq!(
            msg,
            "column \"email\" appears more than once; \
             unknown columns \"colour\", \"shoe_size\" (not fields of this campaign); \
             columns \"score\" are fields with import off"
        );
        let msg = header_error(read_all(&b"email,,name\n"[..]).await);
        assert_eq!(
            msg,
            "column 2 has no name; required columns \"due_date\" are missing"
        );
        assert_eq!(header_error(read_all(&b""[..]).await), "the file is empty");
        assert_eq!(
            header_error(read_all(&b"\n\r\n"[..]).await),
            "the file is empty"
        );
        assert_eq!(
            header_error(read_all(&b"\xef\xbb\xbf"[..]).await),
            "the file is empty"
        );
        assert_eq!(
            header_error(read_all(&b"\xff\xfe,due_date\n"[..]).await),
            "column 1 is not valid UTF-8"
        );
    }

    #[tokio::test]
    async fn a_header_only_file_has_no_rows() {
        assert!(rows(b"email,due_date\r\n").await.is_empty());
        assert!(rows(b"email,due_date").await.is_empty());
    }

    #[tokio::test]
    async fn invalid_utf8_in_a_cell_fails_that_row_only() {
        let rows =
            rows(b"email,name,due_date\na@x.io,\xc3\x28,2026-06-30\nb@x.io,B,2026-06-30\n").await;
        assert_eq!(
            rows[0],
            Err(RowError {
                row: 2,
                reason: "cell 2 is not valid UTF-8".into()
            })
        );
        assert!(rows[1].is_ok());
    }

    #[tokio::test]
    async fn an_open_quote_costs_one_row_not_the_memory_of_the_file() {
        let mut csv = b"email,name,due_date\na@x.io,A,2026-06-30\nb@x.io,\"never closed,".to_vec();
        csv.extend(std::iter::repeat_n(b'x', 3 * MAX_ROW_BYTES));
        csv.extend(b"\nc@x.io,C,2026-06-30\n");
        let mut import = CsvImport::open(&csv[..], &fields(), Tz::UTC).await.unwrap();
        assert!(import.next_row().await.unwrap().unwrap().is_ok());
        let err = import.next_row().await.unwrap().unwrap().unwrap_err();
        assert_eq!(err.row, 3);
        assert!(err.reason.contains("quote left open"));
        assert!(import.next_row().await.unwrap().is_none());
        assert!(import.buffered_bytes() <= READ_CHUNK + MAX_ROW_BYTES + 64 * 8);
    }

    #[tokio::test]
    async fn too_many_cells_skip_the_row() {
        let mut csv = b"email,due_date\n".to_vec();
        csv.extend(",".repeat(MAX_COLUMNS + 5).as_bytes());
        csv.extend(b"x\nok@x.io,2026-06-30\n");
        let rows = rows(&csv).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].as_ref().unwrap_err().reason,
            format!("the row has more than {MAX_COLUMNS} cells")
        );
        assert!(rows[1].is_ok());
    }

    #[tokio::test]
    async fn streams_100k_rows_through_a_pipe_in_bounded_memory() {
        const ROWS: usize = 100_000;
        let (mut writer, reader) = tokio::io::duplex(16 * 1024);
        let producer = tokio::spawn(async move {
            writer
                .write_all(b"external_id,email,name,due_date,amount,remind_at\r\n")
                .await?;
            for i in 0..ROWS {
                // Every 10,000th row has a bad e-mail; every 1,000th a multi-line name.
                let email = if i % 10_000 == 7 {
                    "broken".to_string()
                } else {
                    format!("user{i}@example.com")
                };
                let name = if i % 1_000 == 0 {
                    format!("\"User\n{i}\"")
                } else {
                    format!("User {i}")
                };
                let line = format!("c{i},{email},{name},2026-06-30,{i}.25,2026-06-29 09:00\r\n");
                writer.write_all(line.as_bytes()).await?;
            }
            writer.shutdown().await
        });

        let mut import = CsvImport::open(reader, &fields(), Tz::Europe__Berlin)
            .await
            .unwrap();
        let (mut good, mut bad_rows, mut peak) = (0usize, Vec::new(), 0usize);
        while let Some(row) = import.next_row().await.unwrap() {
            match row {
                Ok(p) => {
                    good += 1;
                    if good == ROWS / 2 {
                        assert_eq!(p.participant["remind_at"], json!("2026-06-29T07:00:00Z"));
                    }
                }
                Err(e) => bad_rows.push(e.row),
            }
            peak = peak.max(import.buffered_bytes());
        }
        producer.await.unwrap().unwrap();
        assert_eq!(good + bad_rows.len(), ROWS);
        // Data row i (0-based) is spreadsheet row i + 2.
        let expected: Vec<usize> = (0..ROWS)
            .filter(|i| i % 10_000 == 7)
            .map(|i| i + 2)
            .collect();
        assert_eq!(bad_rows, expected);
        assert!(peak < 128 * 1024, "held {peak} bytes");
    }
}
