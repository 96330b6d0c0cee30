//! One module per kernel: WGSL source (`shaders/wgsl/<op>.wgsl`), dispatch, and a CPU
//! reference beside it.
