//! The `schema=` of a PostgreSQL URL: a schema an administrator prepared is enough, the writer's
//! user needs no right to create schemas in the database.

mod common;

use common::pg_rows;
use trackmill_dbwriter::DbUrl;

/// Drops the schema, then the role, also when the test fails.
struct Cleanup {
    role: String,
    schema: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        pg_rows(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP ROLE IF EXISTS {}",
            self.schema, self.role
        ));
    }
}

#[test]
fn schema_made_by_an_administrator_needs_no_create_right_on_the_database() {
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let c = Cleanup {
        role: format!("t_dbw_role_{tag}"),
        schema: format!("t_dbw_admin_{tag}"),
    };
    pg_rows(&format!(
        "CREATE ROLE {} LOGIN; CREATE SCHEMA {} AUTHORIZATION {}",
        c.role, c.schema, c.role
    ));
    let can_create = pg_rows(&format!(
        "SELECT has_database_privilege('{}', current_database(), 'CREATE')",
        c.role
    ));
    assert_eq!(
        can_create[0][0].as_deref(),
        Some("f"),
        "precondition: the role may not create schemas"
    );
    let url = DbUrl::parse(&format!(
        "postgres://{}@127.0.0.1:5432/test?sslmode=disable&schema={}",
        c.role, c.schema
    ))
    .unwrap();
    trackmill_dbwriter::check(&url).expect("open and migrate in the prepared schema");
    assert_eq!(trackmill_dbwriter::counts(&url).unwrap()["total"], 0);
    let tables = pg_rows(&format!(
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = '{}' AND table_name IN ('tracks', 'leases', 'runs')",
        c.schema
    ));
    assert_eq!(tables[0][0].as_deref(), Some("3"));
}
