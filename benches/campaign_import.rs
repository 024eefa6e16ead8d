//! CSV participant import into Postgres in rows per second, against a bare baseline measured
//! in the same run: a 1,000,000-row CSV streamed through [`CsvImport`] and
//! [`Store::upsert_participants`] in batches, and the same rows (read the same way) written
//! with plain multi-row INSERTs into a table without indexes, so without the store's work:
//! finding or creating each customer, merging attributes, upserting participants and
//! answering which were new.
//!
//! Both sides read their own stream of the same file and take turns batch by batch, so
//! they see the database under the same conditions (checkpoints, autovacuum). Each side's
//! rate is given end to end (parsing and checking the CSV included) and for its database
//! calls alone.
//!
//! `cargo bench --bench campaign_import`. Needs Postgres (see `pg_testing`); without one it
//! says so and exits 0.

use std::io::Write as _;
use std::time::{Duration, Instant};

use chrono::Utc;
use parley_engine::campaign::{
    Campaign, CampaignRecord, CheckedParticipant, CsvImport, DataField, FieldLevel, FieldType,
    ParticipantQuery,
};
use parley_engine::store::pg_testing::{self, sqlx};
use parley_engine::store::{PgStore, Store};
use uuid::Uuid;

/// Rows in the generated CSV.
const ROWS: usize = 1_000_000;
/// Participants per upsert (and per bare INSERT).
const BATCH: usize = 2_000;
/// Rows between progress lines.
const PROGRESS: usize = 100_000;

/// The baseline's table: the same values, no keys, no indexes.
const BARE_TABLE: &str = "\
    CREATE TABLE bare_participants (
        external_id text, email text, phone text, customer text, participant text,
        timezone text, object_id text, created_at bigint NOT NULL)";

/// Columns of a bare row.
const BARE_COLUMNS: usize = 8;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let Some(db) = pg_testing::fresh_database().await else {
        println!("campaign_import: no Postgres to measure, nothing done");
        return;
    };
    let csv = tempfile::NamedTempFile::new().unwrap();
    let generated = Instant::now();
    write_csv(csv.as_file());
    let csv_bytes = csv.as_file().metadata().unwrap().len();
    println!(
        "generated {ROWS} rows ({:.0} MiB) in {:.1}s",
        csv_bytes as f64 / (1024.0 * 1024.0),
        generated.elapsed().as_secs_f64()
    );

    let store = PgStore::connect(db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let bare = sqlx::PgPool::connect(db.url()).await.unwrap();
    sqlx::query(BARE_TABLE).execute(&bare).await.unwrap();
    let bare_sql = bare_insert(BATCH);

    let tenant = Uuid::now_v7();
    let campaign = CampaignRecord {
        campaign: Campaign::new(tenant, "import bench", Utc::now()),
        fields: fields(),
    };
    store.put_campaign(&campaign).await.unwrap();
    let (campaign_id, tz) = (campaign.campaign.id, campaign.campaign.tz());
    let upload = Uuid::now_v7();

    let open = || async {
        let file = tokio::fs::File::open(csv.path()).await.unwrap();
        CsvImport::open(file, &campaign.fields, tz).await.unwrap()
    };
    let (mut store_rows, mut bare_rows) = (open().await, open().await);
    let (mut store_side, mut bare_side) = (Side::default(), Side::default());
    let mut created = 0;
    loop {
        let started = Instant::now();
        let batch = next_batch(&mut store_rows).await;
        if batch.is_empty() {
            break;
        }
        let db_started = Instant::now();
        let done = store
            .upsert_participants(tenant, campaign_id, Some(upload), &batch, Utc::now())
            .await
            .unwrap();
        store_side.add(batch.len(), started, db_started);
        created += done.iter().filter(|u| u.created).count();

        let started = Instant::now();
        let batch = next_batch(&mut bare_rows).await;
        let db_started = Instant::now();
        insert_bare(&bare, &bare_sql, &batch).await;
        bare_side.add(batch.len(), started, db_started);

        // Whether the rate holds as the tables outgrow the caches.
        if store_side.rows % PROGRESS == 0 {
            println!(
                "{:>9} rows: store {:>7.0} rows/s, bare {:>7.0} rows/s in the database so far",
                store_side.rows,
                store_side.rate(store_side.db),
                bare_side.rate(bare_side.db)
            );
        }
    }
    assert_eq!(store_side.rows, ROWS);
    assert_eq!(bare_side.rows, ROWS);
    assert_eq!(created, ROWS, "every row is a new participant");
    let all = ParticipantQuery {
        limit: 1,
        ..Default::default()
    };
    let (_, total) = store.list_participants(campaign_id, &all).await.unwrap();
    assert_eq!(total, ROWS as u64);

    println!("\n== campaign_import (this run) ==");
    println!("{ROWS} CSV rows per side in batches of {BATCH}");
    println!(
        "upsert_participants: {:>9.0} rows/s end to end, {:>9.0} rows/s in the database, \
         {:.1} ms/batch",
        store_side.rate(store_side.total),
        store_side.rate(store_side.db),
        store_side.per_batch()
    );
    println!(
        "bare INSERTs:        {:>9.0} rows/s end to end, {:>9.0} rows/s in the database, \
         {:.1} ms/batch",
        bare_side.rate(bare_side.total),
        bare_side.rate(bare_side.db),
        bare_side.per_batch()
    );
    println!(
        "ratio store / bare:  {:>9.3} end to end,         {:>9.3} in the database",
        store_side.rate(store_side.total) / bare_side.rate(bare_side.total),
        store_side.rate(store_side.db) / bare_side.rate(bare_side.db)
    );

    store.close().await;
    bare.close().await;
    db.drop_now().await;
}

/// What one side took.
#[derive(Default)]
struct Side {
    rows: usize,
    batches: usize,
    /// Reading the batch and writing it.
    total: Duration,
    /// Writing it.
    db: Duration,
}

impl Side {
    fn add(&mut self, rows: usize, started: Instant, db_started: Instant) {
        self.rows += rows;
        self.batches += 1;
        self.total += started.elapsed();
        self.db += db_started.elapsed();
    }

    fn rate(&self, took: Duration) -> f64 {
        self.rows as f64 / took.as_secs_f64()
    }

    fn per_batch(&self) -> f64 {
        self.db.as_secs_f64() * 1e3 / self.batches as f64
    }
}

/// The campaign's own fields; external_id, email and phone are system fields.
fn fields() -> Vec<DataField> {
    let field = |name: &str, field_type| DataField {
        title: name.into(),
        name: name.into(),
        description: String::new(),
        field_type,
        level: FieldLevel::Participant,
        import: true,
        required: false,
    };
    vec![
        DataField {
            required: true,
            ..field("due_date", FieldType::Date)
        },
        field("amount", FieldType::Float),
        field("segment", FieldType::String),
        field("paid", FieldType::Bool),
        DataField {
            level: FieldLevel::CustomerProfile,
            ..field("name", FieldType::String)
        },
    ]
}

fn write_csv(file: &std::fs::File) {
    let mut w = std::io::BufWriter::new(file);
    writeln!(
        w,
        "external_id,email,phone,name,due_date,amount,segment,paid"
    )
    .unwrap();
    for i in 0..ROWS {
        writeln!(
            w,
            "cust-{i},user{i}@example.com,+1555{i:07},Customer {i},2026-{:02}-{:02},{}.{:02},{},{}",
            i % 12 + 1,
            i % 28 + 1,
            i % 5000,
            i % 100,
            ["retail", "business", "vip"][i % 3],
            i % 2 == 0
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// Up to `BATCH` checked rows; empty at the end of the file. The generated file has no bad
/// rows.
async fn next_batch(rows: &mut CsvImport<tokio::fs::File>) -> Vec<CheckedParticipant> {
    let mut batch = Vec::with_capacity(BATCH);
    while batch.len() < BATCH {
        match rows.next_row().await.unwrap() {
            Some(row) => batch.push(row.unwrap()),
            None => break,
        }
    }
    batch
}

/// `INSERT … VALUES (…), (…), …` for `rows` rows.
fn bare_insert(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=BARE_COLUMNS)
                .map(|c| format!("${}", r * BARE_COLUMNS + c))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO bare_participants (external_id, email, phone, customer, participant, \
         timezone, object_id, created_at) VALUES {}",
        values.join(", ")
    )
}

async fn insert_bare(pool: &sqlx::PgPool, full: &str, batch: &[CheckedParticipant]) {
    // The last batch may be short; it gets a statement of its own size.
    let short;
    let sql = if batch.len() == BATCH {
        full
    } else {
        short = bare_insert(batch.len());
        &short
    };
    let text = |p: &CheckedParticipant, name: &str| {
        p.customer
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let at = Utc::now().timestamp_nanos_opt().unwrap();
    let mut q = sqlx::query(sql);
    for p in batch {
        q = q
            .bind(text(p, "external_id"))
            .bind(text(p, "email"))
            .bind(text(p, "phone"))
            .bind(serde_json::to_string(&p.customer).unwrap())
            .bind(serde_json::to_string(&p.participant).unwrap())
            .bind(p.timezone.map(|tz| tz.name()))
            .bind(p.object_id.clone())
            .bind(at);
    }
    let mut tx = pool.begin().await.unwrap();
    q.execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}
