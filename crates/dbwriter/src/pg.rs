//! The PostgreSQL sink: tokio-postgres driven by a current-thread runtime, statements prepared
//! once per connection, the search path set to the URL's schema (created if missing).

use crate::conn::{Conn, Dialect, Stmt};
use crate::url::PgUrl;
use crate::val::Val;
use crate::{DbError, SqlKind};
use std::collections::HashMap;
use tokio::runtime::Runtime;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;

pub(crate) struct PgConn {
    url: PgUrl,
    rt: Runtime,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
    secret: Option<String>,
}

/// What an error means, by SQLSTATE. A reconnect may cure: the connection or the server went
/// away (08, 57P), resources ran out (53: disk full, out of memory, too many connections), a
/// serialization failure or deadlock (40001, 40P01), lock contention (55P03). One record's data
/// caused: a data exception (22: out of range, bad encoding), a constraint (23), a program limit
/// (54: say, an index row too large). Without a SQLSTATE: a value that could not be encoded
/// belongs to its record; a reply that could not be decoded or a wrong parameter count is final;
/// anything else (the connection) passes.
fn kind(e: &tokio_postgres::Error) -> SqlKind {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return if code.starts_with("08")
            || code.starts_with("57P")
            || code.starts_with("53")
            || code == "40001"
            || code == "40P01"
            || code == "55P03"
        {
            SqlKind::Transient
        } else if code.starts_with("22") || code.starts_with("23") || code.starts_with("54") {
            SqlKind::Record
        } else {
            SqlKind::Fatal
        };
    }
    let msg = e.to_string();
    if msg.contains("deserializing") || msg.contains("parameters") {
        SqlKind::Fatal
    } else if msg.contains("serializing") {
        SqlKind::Record
    } else {
        SqlKind::Transient
    }
}

impl PgConn {
    pub fn open(url: &PgUrl) -> Result<Self, DbError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let secret = url
            .config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        let mut c = PgConn {
            url: url.clone(),
            rt,
            client: None,
            statements: HashMap::new(),
            secret,
        };
        c.connect()?;
        Ok(c)
    }

    fn err(&self, e: tokio_postgres::Error) -> DbError {
        let t = kind(&e);
        let mut msg = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => match std::error::Error::source(&e) {
                Some(src) => format!("{e}: {src}"),
                None => e.to_string(),
            },
        };
        if let Some(s) = &self.secret {
            msg = msg.replace(s.as_str(), "***");
        }
        DbError::sql(msg, t)
    }

    fn connect(&mut self) -> Result<(), DbError> {
        self.client = None;
        self.statements.clear();
        let tls =
            crate::tls::connector().map_err(|e| DbError::sql(e.to_string(), SqlKind::Fatal))?;
        let config = self.url.config.clone();
        let (client, connection) = self
            .rt
            .block_on(config.connect(tls))
            .map_err(|e| self.err(e))?;
        self.rt.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("postgres connection ended: {e}");
            }
        });
        self.client = Some(client);
        if let Some(schema) = self.url.schema.clone() {
            // CREATE SCHEMA needs the right to create in the database even when the schema
            // exists: look first, so a schema an administrator made for trackmill is enough.
            let exists = self
                .query_one(
                    "SELECT 1 FROM pg_namespace WHERE nspname::text = $1",
                    &[Val::Text(schema.clone())],
                )?
                .is_some();
            if !exists {
                // Concurrent first connections race on CREATE SCHEMA; the advisory lock orders them.
                self.batch(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock(7239001); \
                     CREATE SCHEMA IF NOT EXISTS \"{schema}\"; COMMIT"
                ))?;
            }
            self.batch(&format!("SET search_path TO \"{schema}\""))?;
        }
        Ok(())
    }

    fn client(&self) -> Result<&Client, DbError> {
        match &self.client {
            Some(c) if !c.is_closed() => Ok(c),
            _ => Err(DbError::sql(
                "not connected to PostgreSQL",
                SqlKind::Transient,
            )),
        }
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let client = self.client()?;
        let st = self
            .rt
            .block_on(client.prepare(sql))
            .map_err(|e| self.err(e))?;
        if self.statements.len() >= STATEMENT_CACHE {
            // Multi-row statements vary with the batch size; keep the cache bounded.
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

fn params(p: &[Val]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    p.iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

fn read(row: &tokio_postgres::Row, i: usize) -> Result<Val, tokio_postgres::Error> {
    let ty = row.columns()[i].type_().clone();
    Ok(match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Val::Null, Val::I64),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Val::Null, |v| Val::I64(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Val::Null, |v| Val::I64(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(Val::Null, Val::F64),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map_or(Val::Null, |v| Val::F64(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Val::Null, Val::Bool),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Val::Null, Val::Bytes),
        Type::JSON | Type::JSONB => row
            .try_get::<_, Option<serde_json::Value>>(i)?
            .map_or(Val::Null, Val::Json),
        Type::FLOAT4_ARRAY => row
            .try_get::<_, Option<Vec<f32>>>(i)?
            .map_or(Val::Null, Val::F32s),
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Val::Null, Val::Text),
    })
}

impl Conn for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&mut self, sql: &str, p: &[Val]) -> Result<u64, DbError> {
        let st = self.statement(sql)?;
        let client = self.client()?;
        self.rt
            .block_on(client.execute(&st, &params(p)))
            .map_err(|e| self.err(e))
    }

    fn query(&mut self, sql: &str, p: &[Val]) -> Result<Vec<Vec<Val>>, DbError> {
        let st = self.statement(sql)?;
        let client = self.client()?;
        let rows = self
            .rt
            .block_on(client.query(&st, &params(p)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut r = Vec::with_capacity(row.len());
            for i in 0..row.len() {
                r.push(read(row, i).map_err(|e| self.err(e))?);
            }
            out.push(r);
        }
        Ok(out)
    }

    fn query_many(&mut self, stmts: &[Stmt]) -> Result<Vec<Vec<Vec<Val>>>, DbError> {
        let mut prepared = Vec::with_capacity(stmts.len());
        for (sql, _) in stmts {
            prepared.push(self.statement(sql)?);
        }
        let client = self.client()?;
        let all: Vec<Vec<&(dyn tokio_postgres::types::ToSql + Sync)>> =
            stmts.iter().map(|(_, p)| params(p)).collect();
        // Issued together, the queries share round trips (tokio-postgres pipelines them).
        let futures = prepared
            .iter()
            .zip(&all)
            .map(|(st, p)| client.query(st, p.as_slice()));
        let results = self
            .rt
            .block_on(futures_util::future::try_join_all(futures))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(results.len());
        for rows in &results {
            let mut rs = Vec::with_capacity(rows.len());
            for row in rows {
                let mut r = Vec::with_capacity(row.len());
                for i in 0..row.len() {
                    r.push(read(row, i).map_err(|e| self.err(e))?);
                }
                rs.push(r);
            }
            out.push(rs);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        let client = self.client()?;
        self.rt
            .block_on(client.batch_execute(sql))
            .map_err(|e| self.err(e))
    }

    fn begin(&mut self) -> Result<(), DbError> {
        self.batch("BEGIN")
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.batch("COMMIT")
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        self.batch("ROLLBACK")
    }

    fn now_ms(&mut self) -> Result<i64, DbError> {
        let row = self.query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )?;
        row.and_then(|r| r.first().and_then(Val::i64))
            .ok_or_else(|| DbError::sql("no time from server", SqlKind::Transient))
    }

    fn reconnect(&mut self) -> Result<(), DbError> {
        self.connect()
    }
}
