//! # airlock-interop: other clean rooms' formats, to and from Airlock's
//!
//! Pure conversions, no IO, kept out of `airlock-policy` so the vocabulary
//! of a collaboration does not carry another product's document shapes.
//! Today: [`aws`], AWS Clean Rooms' configured-table analysis rules and
//! analysis templates. The `airlock interop` commands read and write the
//! files; everything here is tested alone.

#![forbid(unsafe_code)]

pub mod aws;
