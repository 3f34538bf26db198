//! Lane-wise numeric kernels that LLVM vectorizes: an `exp` accurate to about one ulp
//! written with plain IEEE arithmetic (so every SIMD width gives the same bits), and the
//! runtime dispatch that compiles the hot loops for the widest SIMD the CPU has.
//!
//! The loops that use these work on groups of [`LANES`] rows held in fixed-size arrays;
//! each lane keeps its own accumulators and lanes are summed in a fixed order, so a
//! result never depends on the instruction set or on how many threads ran.

/// Rows processed side by side (an AVX-512 register of f64, two AVX2 registers).
pub(crate) const LANES: usize = 8;

/// One value per lane.
pub(crate) type Lanes = [f64; LANES];

/// Run `kernel` compiled for the widest SIMD the CPU supports (AVX-512, AVX2+FMA, or the
/// baseline), detected at run time.
#[inline(always)]
pub(crate) fn dispatch<K: Kernel>(kernel: K) -> K::Output {
    pulp::Arch::new().dispatch(Dispatched(kernel))
}

/// A hot loop for [`dispatch`]. `run` must be `#[inline(always)]`, and so must everything
/// it calls, so that the loops are compiled inside the function that enables the wider
/// instructions (a closure is not reliably inlined there). Loops written on plain arrays
/// are left to LLVM; `simd` is there for those it does not vectorize well.
pub(crate) trait Kernel {
    /// What the loop returns.
    type Output;
    /// The loop.
    fn run<S: pulp::Simd>(self, simd: S) -> Self::Output;
}

struct Dispatched<K>(K);

impl<K: Kernel> pulp::WithSimd for Dispatched<K> {
    type Output = K::Output;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> K::Output {
        self.0.run(simd)
    }
}

/// [`LANES`] accumulators held as SIMD registers of `S`: one register of 8 (AVX-512),
/// two of 4 (AVX2) or eight scalars. Lane `t` always sums the same rows in the same
/// order, so every width gives the same bits.
#[derive(Clone, Copy)]
pub(crate) struct Acc<S: pulp::Simd> {
    regs: [S::f64s; LANES],
}

impl<S: pulp::Simd> Acc<S> {
    /// Registers per group of [`LANES`] values.
    pub(crate) const REGS: usize = LANES / S::F64_LANES;

    #[inline(always)]
    pub(crate) fn zero(simd: S) -> Self {
        Self { regs: [simd.splat_f64s(0.0); LANES] }
    }

    #[inline(always)]
    pub(crate) fn splat(simd: S, value: f64) -> Self {
        Self { regs: [simd.splat_f64s(value); LANES] }
    }

    /// The lanes, in order.
    #[inline(always)]
    pub(crate) fn lanes(&self) -> Lanes {
        let mut out = [0.0; LANES];
        let (regs, _) = S::as_mut_simd_f64s(&mut out);
        regs.copy_from_slice(&self.regs[..Self::REGS]);
        out
    }

    /// The lanes, summed in a fixed order.
    #[inline(always)]
    pub(crate) fn sum(&self) -> f64 {
        lane_sum(&self.lanes())
    }

    #[inline(always)]
    pub(crate) fn reg(&mut self, v: usize) -> &mut S::f64s {
        &mut self.regs[v]
    }
}

/// Sum of the lanes in a fixed order.
#[inline(always)]
pub(crate) fn lane_sum(a: &Lanes) -> f64 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// e^r on |r| ≤ ln 2 / 2 by a degree-10 polynomial 1 + r q(r), q the Chebyshev
/// interpolant of (e^r - 1) / r at 10 nodes (near minimax), written out in powers of r.
/// Its error is about 1e-15 relative, and e^0 is exactly 1.
const POLY: [f64; 11] = [
    1.0,
    1.000_000_000_000_002,
    0.500_000_000_000_015_9,
    0.166_666_666_666_049_76,
    0.041_666_666_665_068_67,
    0.008_333_333_370_967_264,
    0.001_388_888_937_814_807,
    0.000_198_411_863_719_127_86,
    2.480_100_495_997_739e-5,
    2.763_424_640_905_087_4e-6,
    2.781_409_599_819_598e-7,
];

/// Below this `exp` returns 0: e^-700 ≈ 1e-304, far under anything the mixture adds to
/// (its counts carry 10 machine epsilons), and it keeps the products that follow out of
/// the slow subnormal range.
pub(crate) const EXP_FLOOR: f64 = -700.0;

/// e^x within a few ulp (2e-15 relative) for x in [-700, 709]; 0 below -700, NaN for
/// NaN, meaningless above 709. The mixture needs far less: its outputs must match scikit-learn to 1e-9, and a
/// relative error in every responsibility moves them by about as much (the parity tests
/// land near 1e-13). A one-ulp polynomial costs three more multiply-adds per row and
/// component, in the fit's and the transform's hottest loop.
///
/// Cody–Waite reduction x = n ln 2 + r with |r| ≤ ln 2 / 2, then [`POLY`], then a scale by
/// 2^n built from the exponent bits. No branches and no table, so it vectorizes, and
/// every SIMD width gives the same bits.
#[inline(always)]
pub(crate) fn exp(x: f64) -> f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    // fdlibm's split of ln 2: the high part has 21 trailing zero bits, so n * LN2_HI is
    // exact for |n| < 2^21.
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // Adding 1.5 * 2^52 rounds to the nearest integer and leaves it in the low bits.
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    // Not clamped above: the callers pass shifted log-densities, at most about 0.
    let xc = max(EXP_FLOOR, x);
    let t = xc.mul_add(LOG2_E, SHIFTER);
    let n = t - SHIFTER;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    // Estrin's scheme: a dependency chain of four multiply-adds instead of ten.
    let r2 = r * r;
    let r4 = r2 * r2;
    let pair = |i: usize| POLY[i + 1].mul_add(r, POLY[i]);
    let low = pair(2).mul_add(r2, pair(0));
    let mid = pair(6).mul_add(r2, pair(4));
    let high = POLY[10].mul_add(r2, pair(8));
    let p = high.mul_add(r4 * r4, mid.mul_add(r4, low));
    // t's low bits hold n (two's complement); n + 1023 in the exponent field is 2^n.
    let scale = f64::from_bits(t.to_bits().wrapping_add(1023) << 52);
    let y = p * scale;
    if x < EXP_FLOOR { 0.0 } else { y }
}

/// e^r on |r| ≤ ln 2 / 2 to 1.1e-10 relative: as [`POLY`], degree 7.
const POLY_DRAW: [f64; 8] = [
    1.0,
    0.999_999_999_999_998_9,
    0.500_000_004_711_770_1,
    0.166_666_667_190_182_72,
    0.041_666_352_896_947_6,
    0.008_333_298_478_970_573,
    0.001_394_110_842_356_553_7,
    0.000_198_992_766_552_401_87,
];

/// e^x for x ≤ 0 within 1.1e-10 relative, and e^-700 below -700: the posterior
/// probabilities a transform draws a component from. A draw compares them with a uniform
/// number, so an error of 1e-10 moves the boundaries by far less than any sample could
/// show, and costs a third less than [`exp`].
#[inline(always)]
pub(crate) fn exp_draw(x: f64) -> f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    const LN_2: f64 = std::f64::consts::LN_2;
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    let xc = max(x, EXP_FLOOR);
    let t = xc.mul_add(LOG2_E, SHIFTER);
    let n = t - SHIFTER;
    let r = n.mul_add(-LN_2, xc);
    let r2 = r * r;
    let pair = |i: usize| POLY_DRAW[i + 1].mul_add(r, POLY_DRAW[i]);
    let p = pair(6).mul_add(r2, pair(4)).mul_add(r2 * r2, pair(2).mul_add(r2, pair(0)));
    p * f64::from_bits(t.to_bits().wrapping_add(1023) << 52)
}

/// The larger of two values, as `maxpd` computes it (no NaN handling: callers pass
/// finite values, or accept a NaN result).
#[inline(always)]
pub(crate) fn max(a: f64, b: f64) -> f64 {
    if a > b { a } else { b }
}

/// The smaller of two values, as `minpd` computes it.
#[inline(always)]
pub(crate) fn min(a: f64, b: f64) -> f64 {
    if a < b { a } else { b }
}

/// `x = m 2^e` with `m` in [1, 2): `(m, e)`, for a positive normal `x`. Exact.
#[inline(always)]
pub(crate) fn split(x: f64) -> (f64, f64) {
    const MANTISSA: u64 = (1 << 52) - 1;
    let bits = x.to_bits();
    (f64::from_bits((bits & MANTISSA) | (1023 << 52)), ((bits >> 52) & 0x7ff) as f64 - 1023.0)
}

/// `ln` of the product over the lanes of `mantissa_t 2^exponent_t`, each mantissa a
/// product of at most a few hundred values in [1, 2) (so finite), each exponent an integer.
pub(crate) fn ln_of_product(mantissa: &Lanes, exponent: &Lanes) -> f64 {
    (0..LANES).map(|t| mantissa[t].ln() + exponent[t] * std::f64::consts::LN_2).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn ulps(a: f64, b: f64) -> f64 {
        (a - b).abs() / (b.abs() * f64::EPSILON)
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut worst = 0.0_f64;
        for i in 0..2_000_000 {
            let x = match i % 4 {
                0 => rng.random_range(-1.0..1.0),
                1 => rng.random_range(-40.0..0.0),
                2 => rng.random_range(EXP_FLOOR..709.0),
                _ => rng.random_range(-1e-6..1e-6),
            };
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        // The polynomial's 1e-15 plus rounding; libm itself is within 1 ulp.
        assert!(worst <= 10.0, "worst error {worst} ulp");
        for x in [0.0, -0.0, 1.0, -1.0, EXP_FLOOR, 709.0, -1e-300, std::f64::consts::LN_2] {
            assert!(ulps(exp(x), x.exp()) <= 10.0, "exp({x}) = {} vs {}", exp(x), x.exp());
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-700.5), 0.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert!(exp(f64::NAN).is_nan());
    }

    #[test]
    fn exp_draw_is_within_1e_10_of_libm() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for i in 0..1_000_000 {
            let x = if i % 2 == 0 { rng.random_range(-40.0..0.0) } else { rng.random_range(EXP_FLOOR..0.0) };
            let rel = (exp_draw(x) - x.exp()).abs() / x.exp();
            assert!(rel <= 1.2e-10, "exp_draw({x}): relative error {rel:e}");
        }
        assert_eq!(exp_draw(0.0), 1.0);
        assert!(exp_draw(-1e6) > 0.0 && exp_draw(-1e6) < 1e-300);
    }

    #[test]
    fn split_products_give_the_sum_of_logs() {
        // As the E-step uses them: a block of row sums from e^-600 to 10, eight lanes.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let x: Vec<f64> = (0..256).map(|_| rng.random_range(-600.0_f64..2.3).exp()).collect();
        let (mut mantissa, mut exponent) = ([1.0; LANES], [0.0; LANES]);
        for (i, v) in x.iter().enumerate() {
            let (m, e) = split(*v);
            assert_eq!(m * 2.0_f64.powf(e), *v);
            mantissa[i % LANES] *= m;
            exponent[i % LANES] += e;
        }
        let want: f64 = x.iter().map(|v| v.ln()).sum();
        let got = ln_of_product(&mantissa, &exponent);
        assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
    }
}
