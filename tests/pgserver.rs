//! The shared PostgreSQL server in the end-to-end tests: a schema of its own per test (dropped at
//! the end), SQL on a separate connection, and a short outage whose guard always starts the server
//! again, because other test runs use the same server at the same time.

use crate::wait_for;
use std::process::Command;
use std::time::Duration;

/// The server the tests use (trust authentication, database `test`).
pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One test's schema; dropped with everything in it when the guard goes.
pub struct PgSchema {
    pub name: String,
}

impl PgSchema {
    /// A fresh schema name that no other test or run uses (created by the DB writer).
    pub fn new(tag: &str) -> PgSchema {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000;
        PgSchema {
            name: format!("t_e2e_{tag}_{}_{nanos}", std::process::id()),
        }
    }

    /// The `--db` URL of this schema.
    pub fn url(&self) -> String {
        format!("{PG_BASE}?sslmode=disable&schema={}", self.name)
    }

    /// Runs `sql` with this schema on the search path; every row's values as text.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        pg_rows(&format!("SET search_path TO {}; {sql}", self.name)).expect("query the test schema")
    }

    /// One integer from `sql`.
    pub fn scalar(&self, sql: &str) -> i64 {
        self.rows(sql)
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_else(|| panic!("no value from {sql}"))
            .parse()
            .expect("an integer")
    }

    /// Like [`Self::scalar`], but 0 while the schema's tables do not exist yet.
    pub fn count(&self, sql: &str) -> i64 {
        pg_rows(&format!("SET search_path TO {}; {sql}", self.name))
            .ok()
            .and_then(|rows| rows.first()?.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = trackmill_dbwriter::DbUrl::parse(&self.url()).expect("schema URL");
        if let Err(e) = trackmill_dbwriter::drop_schema(&url) {
            eprintln!("could not drop schema {}: {e}", self.name);
        }
    }
}

/// Runs `sql` (simple protocol, several statements allowed) on a fresh connection.
pub fn pg_rows(sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let rt = runtime();
    rt.block_on(async {
        let client = connect().await?;
        let msgs = client.simple_query(sql).await.map_err(|e| e.to_string())?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect())
    })
}

/// A transaction holding `LOCK TABLE … IN ACCESS EXCLUSIVE MODE` until dropped (rolled back):
/// a query that reads the table waits for it, so a test can hold a query in flight.
pub struct TableLock {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A client of the test database; its connection runs on the current runtime.
async fn connect() -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(PG_BASE, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

impl TableLock {
    pub fn take(schema: &str, table: &str) -> TableLock {
        let rt = runtime();
        let client = rt.block_on(async {
            let client = connect().await.expect("connect to PostgreSQL");
            client
                .batch_execute(&format!(
                    "BEGIN; LOCK TABLE {schema}.{table} IN ACCESS EXCLUSIVE MODE"
                ))
                .await
                .expect("lock the table");
            client
        });
        TableLock { rt, client }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.client.batch_execute("ROLLBACK"));
    }
}

/// True when the server accepts connections and answers a query.
pub fn accepting() -> bool {
    pg_rows("SELECT 1").is_ok()
}

/// The server stopped for a while. The guard starts it again when dropped, also when the test
/// fails; keep outages short, other tests share the server.
pub struct Outage {
    version: String,
    down: bool,
}

impl Outage {
    /// Stops the local cluster (`pg_ctlcluster VERSION main stop`, fast mode).
    pub fn stop() -> Outage {
        let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .expect("PostgreSQL is installed from Debian packages (/etc/postgresql)")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
        let version = versions
            .pop()
            .expect("a cluster version in /etc/postgresql");
        // The guard exists before the stop, so a stop that half-worked is still undone.
        let mut outage = Outage {
            version,
            down: true,
        };
        assert!(
            outage.ctl("stop"),
            "pg_ctlcluster could not stop the server"
        );
        outage.down = true;
        outage
    }

    /// Starts the server again and waits until it accepts connections.
    pub fn start(&mut self) {
        if self.down {
            assert!(
                self.ctl("start"),
                "pg_ctlcluster could not start the server"
            );
            self.down = false;
        }
        wait_for(
            "PostgreSQL to accept connections",
            Duration::from_secs(60),
            || accepting().then_some(()),
        );
    }

    /// `pg_ctlcluster VERSION main ACTION`, bypassing systemd where plain fails.
    fn ctl(&self, action: &str) -> bool {
        let run = |extra: &[&str]| {
            Command::new("pg_ctlcluster")
                .args(extra)
                .args([self.version.as_str(), "main", action])
                .status()
                .is_ok_and(|s| s.success())
        };
        run(&[]) || run(&["--skip-systemctl-redirect"])
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.down {
            if !self.ctl("start") {
                eprintln!("could not start PostgreSQL {} again", self.version);
            }
            self.down = false;
            // No panic while unwinding: wait without asserting.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !accepting() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
