//! Where a backdoor lives: the image embedding decomposed into the direct contributions of the
//! image tower's components (`decompose`), how much of a trigger's push towards the target class
//! each one carries (`push`), and the splice test that swaps blocks with a clean model (`splice`).

pub mod decompose;
pub mod push;
pub mod splice;

pub use decompose::{components, decompose, Component, Decomposition};
pub use push::{trigger_push, AnatomyReport, ComponentPush, LayerPush, PushSpec};
pub use splice::{splice_test, SpliceRow};
