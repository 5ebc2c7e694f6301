//! Analysis benchmark (filled in by the analysis work).
pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("analysis benchmark not built yet")
}
