//! Bounded fuzzing of the analysis crate (filled in by the analysis work).
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("fuzzing not built yet")
}
