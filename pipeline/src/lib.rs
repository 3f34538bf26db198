//! Stages with lineage: the stock-market pipeline. Features for ETFs and for stocks run in
//! parallel ([`features`]), are merged into one Parquet dataset, train a random forest
//! ([`forest`]) that is registered and served.
#![warn(missing_docs)]

pub mod features;
pub mod forest;
pub mod run;
