//! Image preprocessing shared by the networks: face alignment and chip extraction.

pub mod align;
