//! DB-writer benchmark (filled in by the database work).
pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("db benchmark not built yet")
}
