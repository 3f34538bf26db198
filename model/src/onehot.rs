//! Reading one-hot blocks back: which slot of a block is hot in each row.

use arrow_array::{Array, UInt8Array};

use crate::transform::OneHot;

impl OneHot<'_> {
    /// The value at row `i`, a null counting as 0.
    fn get(&self, i: usize) -> f64 {
        match self {
            Self::U8(a) if a.is_valid(i) => f64::from(a.value(i)),
            Self::F64(a) if a.is_valid(i) => a.value(i),
            _ => 0.0,
        }
    }
}

/// Per row of a block of `n` rows: the index of the largest slot (the first on ties) and
/// its value. An empty block gives index 0 and value -inf on every row.
pub(crate) fn argmax(block: &[OneHot<'_>], n: usize) -> (Vec<usize>, Vec<f64>) {
    let mut best = vec![0usize; n];
    let mut best_value = vec![f64::NEG_INFINITY; n];
    for (j, column) in block.iter().enumerate() {
        for i in 0..n {
            let v = column.get(i);
            if v > best_value[i] {
                best_value[i] = v;
                best[i] = j;
            }
        }
    }
    (best, best_value)
}

/// One UInt8 column per slot of `0..slots`: 1 where `hot[i] == Some(slot)`, else 0.
pub(crate) fn one_hot_columns(hot: &[Option<usize>], slots: usize) -> Vec<UInt8Array> {
    (0..slots).map(|j| UInt8Array::from(hot.iter().map(|&h| u8::from(h == Some(j))).collect::<Vec<u8>>())).collect()
}
