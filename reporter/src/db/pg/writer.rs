//! The ingest writer: group commit of many requests' batches in one transaction.
