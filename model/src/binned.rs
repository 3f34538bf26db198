//! Exact sufficient statistics of a column on a fine grid, mergeable across shards, for a
//! mixture fit that sees every row ([`crate::fit_histogram`]).
//!
//! A bin holds the finite values that share the top [`KEY_BITS`] bits of their IEEE 754
//! pattern: the sign, the exponent and the first [`MANTISSA_BITS`] bits of the mantissa,
//! so each bin is a value range of relative width 2^-12 (2.4e-4). Within a bin the value is
//! exactly linear in the remaining low bits (`|x| = base + ulp × low`, one binade), so the
//! bin keeps integer sums: the count, `Σ low` and `Σ low²`. Integer sums are exact, so
//! merging is associative and commutative: the histograms of shards merged in any order
//! equal the one-pass histogram bit for bit, and so does every fit on it.

/// Mantissa bits in a bin's key: bins of relative width 2^-12.
pub const MANTISSA_BITS: u32 = 12;
/// Bits of the pattern that name a bin: sign, 11 exponent bits, [`MANTISSA_BITS`].
pub const KEY_BITS: u32 = 12 + MANTISSA_BITS;
/// Low bits of the pattern summed within a bin.
const LOW_BITS: u32 = 64 - KEY_BITS;
const LOW_MASK: u64 = (1 << LOW_BITS) - 1;

/// One bin's exact sums: rows, `Σ low`, `Σ low²` of the pattern's low [`LOW_BITS`] bits
/// (`low < 2^40`, so `Σ low²` holds 2^48 rows per bin before it could overflow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bin {
    count: u64,
    sum: u128,
    sum_squares: u128,
}

/// A bin as a weighted point: its rows' mean, their number, and their variance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Mean of the bin's values.
    pub value: f64,
    /// Rows in the bin.
    pub weight: f64,
    /// Variance of the bin's values around `value` (population, ≥ 0).
    pub variance: f64,
}

/// Bins per binade (sign and exponent): one per value of the key's mantissa bits.
const BINADE_BINS: usize = 1 << MANTISSA_BITS;
/// Binades: one per value of the sign and the exponent.
const BINADES: usize = 1 << 12;

/// First bytes of [`Histogram::to_bytes`].
const MAGIC: &[u8; 8] = b"SFHIST01";
/// The magic, then rows, skipped and bins as `u64`.
const HEADER_BYTES: usize = 8 + 3 * 8;
/// A bin: key `u32`, count `u64`, two `u128` sums.
const BIN_BYTES: usize = 4 + 8 + 16 + 16;

/// The exact histogram of a column's finite values on the grid of [`KEY_BITS`]-bit keys.
///
/// Stored as a two-level table: per binade (sign and exponent) a dense block of
/// [`BINADE_BINS`] bins, allocated when its first value arrives (192 KiB each; the
/// `Amount` data touch about 20 binades). A value costs two indexings, no hashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    binades: Vec<Option<Box<[Bin]>>>,
    rows: u64,
    /// Non-finite values seen (NaN, ±inf): left out of the bins.
    skipped: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { binades: vec![None; BINADES], rows: 0, skipped: 0 }
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// The histogram of `values` (non-finite ones counted in [`Histogram::skipped`]).
    pub fn of(values: &[f64]) -> Self {
        let mut h = Self::new();
        h.extend(values.iter().copied());
        h
    }

    fn binade(&mut self, index: usize) -> &mut [Bin] {
        self.binades[index].get_or_insert_with(|| vec![Bin::default(); BINADE_BINS].into_boxed_slice())
    }

    /// Add one value; NaN and infinities are counted as skipped.
    #[inline]
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.skipped += 1;
            return;
        }
        let bits = x.to_bits();
        let key = (bits >> LOW_BITS) as usize;
        let low = bits & LOW_MASK;
        let bin = &mut self.binade(key >> MANTISSA_BITS)[key & (BINADE_BINS - 1)];
        bin.count += 1;
        bin.sum += u128::from(low);
        bin.sum_squares += u128::from(low) * u128::from(low);
        self.rows += 1;
    }

    /// Add every value of `values`.
    pub fn extend(&mut self, values: impl IntoIterator<Item = f64>) {
        for x in values {
            self.add(x);
        }
    }

    /// Add `other`'s rows: exact, so the order of merges never changes the result.
    pub fn merge(&mut self, other: &Self) {
        for (index, theirs) in other.binades.iter().enumerate() {
            let Some(theirs) = theirs else { continue };
            for (bin, b) in self.binade(index).iter_mut().zip(theirs.iter()) {
                bin.count += b.count;
                bin.sum += b.sum;
                bin.sum_squares += b.sum_squares;
            }
        }
        self.rows += other.rows;
        self.skipped += other.skipped;
    }

    /// Finite values added.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Non-finite values left out.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Bins holding at least one value.
    pub fn bins(&self) -> usize {
        self.binades.iter().flatten().map(|b| b.iter().filter(|b| b.count > 0).count()).sum()
    }

    /// Whether no finite value was added.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The histogram as bytes another process reads back with [`Histogram::from_bytes`]
    /// unchanged (a fit's statistics computed on one machine, merged on another): a magic,
    /// the rows and skipped counts, then each non-empty bin's key and exact sums, little
    /// endian, in key order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bins = self.bins();
        let mut out = Vec::with_capacity(HEADER_BYTES + bins * BIN_BYTES);
        out.extend_from_slice(MAGIC);
        for n in [self.rows, self.skipped, bins as u64] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for (index, block) in self.binades.iter().enumerate() {
            let Some(block) = block else { continue };
            for (i, bin) in block.iter().enumerate().filter(|(_, b)| b.count > 0) {
                // The key is at most KEY_BITS (24) bits.
                out.extend_from_slice(&(((index << MANTISSA_BITS) | i) as u32).to_le_bytes());
                out.extend_from_slice(&bin.count.to_le_bytes());
                out.extend_from_slice(&bin.sum.to_le_bytes());
                out.extend_from_slice(&bin.sum_squares.to_le_bytes());
            }
        }
        out
    }

    /// Read what [`Histogram::to_bytes`] wrote.
    ///
    /// # Errors
    /// A one-line reason when the bytes are not such a histogram (wrong magic, truncated,
    /// a key out of range or repeated, counts that do not add up to the rows).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or("not a shardflow histogram (bad magic)")?;
        let (header, mut body) = rest.split_at_checked(HEADER_BYTES - MAGIC.len()).ok_or("truncated histogram")?;
        let word = |at: usize| u64::from_le_bytes(header[at * 8..at * 8 + 8].try_into().unwrap_or_default());
        let (rows, skipped, bins) = (word(0), word(1), word(2));
        if body.len() as u64 != bins.saturating_mul(BIN_BYTES as u64) {
            return Err(format!("histogram of {bins} bins has {} bytes of bins", body.len()));
        }
        let mut h = Self { skipped, ..Self::default() };
        let mut counted = 0u64;
        let mut last: Option<u32> = None;
        while let Some((bin, rest)) = body.split_at_checked(BIN_BYTES) {
            body = rest;
            let key = u32::from_le_bytes(bin[..4].try_into().unwrap_or_default());
            if key >> KEY_BITS != 0 || last.is_some_and(|l| l >= key) {
                return Err(format!("histogram bin key {key} out of range or out of order"));
            }
            last = Some(key);
            let count = u64::from_le_bytes(bin[4..12].try_into().unwrap_or_default());
            let sum = u128::from_le_bytes(bin[12..28].try_into().unwrap_or_default());
            let sum_squares = u128::from_le_bytes(bin[28..44].try_into().unwrap_or_default());
            if count == 0 {
                return Err(format!("histogram bin {key} is empty"));
            }
            counted = counted.saturating_add(count);
            let key = key as usize;
            h.binade(key >> MANTISSA_BITS)[key & (BINADE_BINS - 1)] = Bin { count, sum, sum_squares };
        }
        if counted != rows {
            return Err(format!("histogram bins hold {counted} rows, its header says {rows}"));
        }
        h.rows = rows;
        Ok(h)
    }

    /// The bins as weighted points, in ascending order of value.
    pub fn points(&self) -> Vec<Point> {
        let bins = |index: usize| {
            self.binades[index].iter().flat_map(move |block| {
                block.iter().enumerate().filter(|(_, b)| b.count > 0).map(move |(i, b)| {
                    // The key is at most KEY_BITS (24) bits.
                    point(((index << MANTISSA_BITS) | i) as u32, *b)
                })
            })
        };
        // Ascending value: negative binades by descending magnitude, then positive ones.
        let half = BINADES / 2;
        let negative = (half..BINADES).rev().flat_map(|index| {
            let mut points: Vec<Point> = bins(index).collect();
            points.reverse();
            points
        });
        negative.chain((0..half).flat_map(bins)).collect()
    }
}

/// A bin's mean and variance from its exact sums.
fn point(key: u32, bin: Bin) -> Point {
    let pattern = u64::from(key) << LOW_BITS;
    let negative = pattern >> 63 == 1;
    let exponent = ((pattern >> 52) & 0x7ff) as i32;
    // One unit of the low bits: 2^(e - 1075) for normal numbers, 2^-1074 for subnormals.
    let ulp = 2f64.powi(exponent.max(1) - 1075);
    let base = f64::from_bits(pattern & !(1 << 63));
    let n = bin.count as f64;
    let mean_low = bin.sum as f64 / n;
    let spread = (bin.sum_squares as f64 / n - mean_low * mean_low).max(0.0);
    let magnitude = base + ulp * mean_low;
    Point { value: if negative { -magnitude } else { magnitude }, weight: n, variance: spread * ulp * ulp }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_hold_each_bins_exact_mean_and_variance() {
        let values = [-3.0, -3.0001, -0.5, 0.0, 1e-310, 1.0, 1.0001, 1.0002, 7.5, 1e300];
        let h = Histogram::of(&values);
        assert_eq!(h.rows(), 10);
        let points = h.points();
        let ordered = points.windows(2).all(|w| w[0].value < w[1].value);
        assert!(ordered, "{points:?}");
        // 1.0, 1.0001 and 1.0002 share a bin (width 2^-12 at 1).
        let one = points.iter().find(|p| (p.value - 1.0001).abs() < 1e-3).expect("bin at 1");
        assert_eq!(one.weight, 3.0);
        assert!((one.value - 1.0001).abs() < 1e-15);
        let var = (1e-4f64.powi(2) * 2.0) / 3.0;
        assert!((one.variance - var).abs() < 1e-12 * var + 1e-24, "{}", one.variance);
        let total: f64 = points.iter().map(|p| p.weight).sum();
        assert_eq!(total, 10.0);
        let mut with_nan = Histogram::of(&[f64::NAN, f64::INFINITY, 2.0]);
        assert_eq!((with_nan.rows(), with_nan.skipped()), (1, 2));
        with_nan.merge(&h);
        assert_eq!(with_nan.rows(), 11);
    }

    #[test]
    fn bytes_read_back_to_the_same_histogram_and_bad_bytes_are_refused() {
        let values: Vec<f64> = (0..10_000).map(|i| ((i * 7919) % 1000) as f64 * 0.37 - 120.0).collect();
        let mut h = Histogram::of(&values);
        h.extend([f64::NAN, 1e-310, -1e300]);
        let bytes = h.to_bytes();
        let back = Histogram::from_bytes(&bytes).expect("read back");
        assert_eq!(back, h);
        assert_eq!(back.points(), h.points());
        assert_eq!(Histogram::from_bytes(&Histogram::new().to_bytes()).expect("empty"), Histogram::new());
        assert!(Histogram::from_bytes(b"SFHIST02").is_err());
        assert!(Histogram::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut wrong_rows = bytes.clone();
        wrong_rows[8] ^= 1;
        assert!(Histogram::from_bytes(&wrong_rows).expect_err("rows").contains("rows"));
    }
}
