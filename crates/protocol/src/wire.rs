//! Arrow IPC framing of the batches that cross a node's boundary.
//!
//! A fragment result is one or more Arrow IPC streams (one per partition of
//! the node's scan), each preceded by its length as a little-endian `u64`.
//! Partitions are encoded and decoded in parallel, and the executor keeps
//! them as separate partitions. In this process the bytes are handed over
//! in memory; the Flight service will carry the same streams. Encoding is
//! pure (no IO), so it lives here where both the node and the hub can use it
//! without linking each other.

use crate::fragment::Treatment;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

/// Batches grouped by partition.
pub type Partitions = Vec<Vec<RecordBatch>>;

/// How a configured column travels from a node to the executor: pseudonyms
/// as 16-byte binary tokens, raw string views as plain Utf8 (a view would
/// drag whole page buffers into the stream), everything else as stored. The
/// guard types the executor plan with it and the node its output, so the two
/// always agree.
pub fn wire_field(source: &Field, treatment: &Treatment) -> Field {
    let data_type = match (treatment, source.data_type()) {
        (Treatment::Pseudonym { .. }, _) => DataType::Binary,
        (Treatment::Raw, DataType::Utf8View) => DataType::Utf8,
        (Treatment::Raw, other) => other.clone(),
    };
    Field::new(source.name(), data_type, source.is_nullable())
}

/// Runs `f` on every item, one scoped thread per item (there is one item per
/// partition, so a handful), and returns the results in order.
fn in_parallel<T, R, F>(items: impl IntoIterator<Item = T>, f: F) -> Result<Vec<R>, ArrowError>
where
    T: Send,
    R: Send,
    F: Fn(T) -> Result<R, ArrowError> + Sync,
{
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items
            .into_iter()
            .map(|item| s.spawn(move || f(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ArrowError::IpcError("a codec thread panicked".into())))
            })
            .collect()
    })
}

fn encode_stream(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut out, schema)?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(out)
}

fn decode_stream(mut buffer: Buffer) -> Result<(Option<SchemaRef>, Vec<RecordBatch>), ArrowError> {
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::new();
    while !buffer.is_empty() {
        let before = buffer.len();
        match decoder.decode(&mut buffer)? {
            Some(b) => batches.push(b),
            None if buffer.len() == before => {
                return Err(ArrowError::IpcError(
                    "bytes after the end of a stream".into(),
                ))
            }
            None => {}
        }
    }
    decoder.finish()?;
    Ok((decoder.schema(), batches))
}

/// Encodes partitions of batches (all of `schema`); at least one stream is
/// written so the schema always travels.
pub fn encode_partitions(
    schema: &SchemaRef,
    partitions: &[Vec<RecordBatch>],
) -> Result<Vec<u8>, ArrowError> {
    let empty = [Vec::new()];
    let parts = if partitions.is_empty() {
        &empty[..]
    } else {
        partitions
    };
    let streams = in_parallel(parts.iter(), |p| encode_stream(schema, p))?;
    let mut out = Vec::with_capacity(streams.iter().map(|s| s.len() + 8).sum());
    for stream in streams {
        out.extend_from_slice(&(stream.len() as u64).to_le_bytes());
        out.extend_from_slice(&stream);
    }
    Ok(out)
}

/// Encodes batches as a single partition.
pub fn encode_batches(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    encode_partitions(schema, &[batches.to_vec()])
}

/// Decodes framed streams into their schema and partitions, without copying
/// the bytes (arrays point into them). Truncated or malformed input, or
/// streams of different schemas, are errors.
pub fn decode_partitions(bytes: Vec<u8>) -> Result<(SchemaRef, Partitions), ArrowError> {
    let all = Buffer::from_vec(bytes);
    let mut streams = Vec::new();
    let mut rest = all.as_slice();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| ArrowError::IpcError("truncated frame length".into()))?;
        let len = usize::try_from(u64::from_le_bytes(*len))
            .map_err(|_| ArrowError::IpcError("frame too long".into()))?;
        if len > tail.len() {
            return Err(ArrowError::IpcError("truncated frame".into()));
        }
        let start = all.len() - tail.len();
        streams.push(all.slice_with_length(start, len));
        rest = &tail[len..];
    }
    let decoded = in_parallel(streams, decode_stream)?;
    let mut schema: Option<SchemaRef> = None;
    let mut partitions = Vec::new();
    for (s, batches) in decoded {
        let s = s.ok_or_else(|| ArrowError::IpcError("stream without a schema".into()))?;
        match &schema {
            Some(first) if first != &s => {
                return Err(ArrowError::IpcError("streams of different schemas".into()))
            }
            Some(_) => {}
            None => schema = Some(s),
        }
        partitions.push(batches);
    }
    let schema = schema.ok_or_else(|| ArrowError::IpcError("no stream".into()))?;
    Ok((schema, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![n, n + 1])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn partitions_round_trip() {
        let parts = vec![vec![batch(1), batch(3)], vec![], vec![batch(5)]];
        let bytes = encode_partitions(&batch(0).schema(), &parts).expect("encode");
        let (schema, back) = decode_partitions(bytes).expect("decode");
        assert_eq!(schema, batch(0).schema());
        assert_eq!(back, parts);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bytes = encode_partitions(&batch(0).schema(), &[vec![batch(1)]]).expect("encode");
        for cut in [1, 7, 8, 20, bytes.len() - 1] {
            assert!(
                decode_partitions(bytes[..cut].to_vec()).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = bytes.clone();
        bad[8..16].copy_from_slice(&[0xff; 8]);
        assert!(decode_partitions(bad).is_err());
        // A stream followed by trailing garbage inside its frame.
        let mut stream = encode_partitions(&batch(0).schema(), &[vec![batch(1)]]).expect("encode");
        stream.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3]);
        let len = (stream.len() - 8) as u64;
        stream[..8].copy_from_slice(&len.to_le_bytes());
        assert!(decode_partitions(stream).is_err());
        assert!(decode_partitions(Vec::new()).is_err());
    }
}
