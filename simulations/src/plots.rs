//! Plots (placeholder until drawn).
use std::path::Path;
pub fn draw_all(_rec: &crate::metrics::Recorder, _sc: &crate::scenario::Scenario, _out: &Path) -> anyhow::Result<()> { Ok(()) }
pub fn draw_sweep(_n: &str, _p: &[crate::sweep::SweepPoint], _out: &Path) -> anyhow::Result<()> { Ok(()) }
