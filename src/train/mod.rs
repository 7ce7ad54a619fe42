//! Training: contrastive (pre)training and poisoning of whole CLIPs (the attack side), and, in
//! later modules, RVPT prompt tuning (the defence).

pub mod contrastive;
pub mod poison_captions;
pub mod poisoning;
pub mod rvpt;
