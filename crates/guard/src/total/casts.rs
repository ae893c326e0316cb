//! Which casts are total: every value of the source type has a value in
//! the target type (integer ranges, decimal digits, floats, strings).

#[allow(clippy::wildcard_imports)]
use super::*;

/// The range of values of an integer type.
pub(super) fn type_range(t: &DataType) -> Option<(i128, i128)> {
    Some(match t {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::UInt8 => (0, u8::MAX.into()),
        DataType::UInt16 => (0, u16::MAX.into()),
        DataType::UInt32 => (0, u32::MAX.into()),
        DataType::UInt64 => (0, u64::MAX.into()),
        _ => return None,
    })
}

pub(super) fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

pub(super) fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Decimal digits an integer type needs.
pub(super) fn digits(t: &DataType) -> Option<u8> {
    Some(match t {
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 => 19,
        DataType::UInt64 => 20,
        _ => return None,
    })
}

/// Whether a cast from `from` to `to` succeeds on every value (the casts
/// that only widen, or that print a value as text).
pub(crate) fn cast_is_total(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to || matches!(from, Null) {
        return true;
    }
    if is_string(to) {
        // Text of a number, a boolean or text. Dates and timestamps are
        // left out: a date beyond chrono's years has no text.
        return is_string(from)
            || is_float(from)
            || type_range(from).is_some()
            || matches!(from, Boolean | Decimal128(..) | Decimal256(..));
    }
    if let (Some((flo, fhi)), Some((tlo, thi))) = (type_range(from), type_range(to)) {
        return tlo <= flo && fhi <= thi;
    }
    if is_float(to) {
        return type_range(from).is_some() || matches!((from, to), (Float16 | Float32, Float64));
    }
    match (from, to) {
        (_, Decimal128(p, s)) | (_, Decimal256(p, s)) if *s >= 0 => match (digits(from), from) {
            (Some(d), _) => i16::from(d) <= i16::from(*p) - i16::from(*s),
            (None, Decimal128(fp, fs)) => {
                *fs >= 0
                    && fs <= s
                    && i16::from(*fp) - i16::from(*fs) <= i16::from(*p) - i16::from(*s)
            }
            _ => false,
        },
        (Date32, Date64) => true,
        _ => false,
    }
}

/// Whether `TRY_CAST` from `from` to `to` returns a value or NULL for
/// every input: the total casts, and parsing or narrowing numbers and text
/// (a value that does not convert becomes NULL).
///
/// Decimals of a negative scale are left out as targets (parsing text into
/// one fails even under `TRY_CAST`, red team), and so is `BOOLEAN` from a
/// decimal (the engine has no such cast).
pub(crate) fn try_cast_is_total(from: &DataType, to: &DataType) -> bool {
    let numeric = |t: &DataType| {
        is_float(t) || type_range(t).is_some() || matches!(t, DataType::Decimal128(_, s) if *s >= 0)
    };
    let plain = |t: &DataType| is_float(t) || type_range(t).is_some();
    cast_is_total(from, to)
        || ((is_string(from) || numeric(from)) && numeric(to))
        || ((is_string(from) || plain(from)) && matches!(to, DataType::Boolean))
        || (is_string(from) && matches!(to, DataType::Date32))
}
