// Quantized matmuls with int8 activations for the native decode step (decode_step.cpp), after llama.cpp's
// Q4_1 x Q8_1 and Q8_0 x Q8_0 dots: each activation row is quantized per 32-block to int8 with a float scale,
// and the weight codes meet it in AVX512-VNNI `vpdpbusd` (u8 x s8 -> int32, four products per lane).
//
// Why: torch's int4 kernel takes bf16 activations and, at batch > 1, unpacks every weight block again for each
// block of four rows; its int8 kernel converts every weight to float. Here a weight block is loaded and
// unpacked once, then meets every row of the batch (up to 8 per pass) in registers.
//
// Layouts (made once at load by model/serving/native_layout.py):
// - int4: tiles of 16 output rows x one 32-wide group, 256 bytes each, tile-major then group: byte
//   64c + 4r + i holds the code of row r at k = 4c + i (low nibble) and k = 16 + 4c + i (high nibble), so a
//   masked 64-byte load is one vpdpbusd operand whose 32-bit lane r is row r's four codes. The scales stay in
//   linear.py's tensor (bf16 [K/g, N, 2]: scale, zero; g = 32, or a GPTQ/AWQ group of 64 to 256 that spans several
//   32-wide blocks), whose 16 (scale, zero) pairs of a tile are 64 bytes. w = (code - 8) * scale + zero, as torch's
//   int4 kernel.
// - int8: linear.py's own [N, K] int8 rows and bf16 per-row scales, unchanged (no copy): the codes are xored
//   with 0x80 to make them unsigned and the +128 offset is cancelled exactly in the int32 accumulator. The kernel
//   takes four weight rows at a time against 1-2 activation rows and two against 3-8 (at most 16 accumulators),
//   so each loaded activation block meets several weight rows, and prefetches the rows 2 KB ahead. Against one
//   weight row at a time for 5-8 rows and no prefetch, the default model's LM head (49,152 x 576) took 0.49x the
//   time at M = 8 and 0.93x at M = 1, outputs bit-identical (docs/BENCHMARKS.md).
//
// Only compiled with AVX512-VNNI (R1_VNNI); elsewhere the native step keeps ATen's kernels.
#pragma once

#ifdef R1_VNNI

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace r1 {

constexpr int64_t kBlock = 32;    // activation block = weight group = GGUF block
constexpr int64_t kTileRows = 16; // int4 tile rows = int32 lanes of a zmm register
constexpr int kMaxRows = 8;       // activation rows that meet one unpacked weight block in registers

// Activation rows quantized per 32-block: q = round(x / d), d = max|x| / 127.
struct QuantRows {
  int64_t M = 0, K = 0;
  std::vector<int8_t> q;          // [M, K]
  std::vector<float> d, sum;      // [M, K/32]: block scale, sum of the block's x (int4's zero term)
  std::vector<float> lane_d;      // [M, K/4]: d of each 4-wide lane (the int8 kernel scales lanes, not blocks)
  std::vector<int32_t> lane_off;  // [M, K/4]: -128 * sum of the lane's four q (cancels the int8 kernel's +128)

  void resize(int64_t rows, int64_t k) {
    M = rows;
    K = k;
    q.resize(M * K);
    d.resize(M * K / kBlock);
    sum.resize(M * K / kBlock);
    lane_d.resize(M * K / 4);
    lane_off.resize(M * K / 4);
  }

  // Quantize row m from x[K] (K a multiple of 32).
  void quantize(int64_t m, const float* x) {
    int8_t* qr = q.data() + m * K;
    for (int64_t g = 0; g < K / kBlock; ++g) {
      const float* xb = x + g * kBlock;
      __m512 a = _mm512_abs_ps(_mm512_loadu_ps(xb)), b = _mm512_abs_ps(_mm512_loadu_ps(xb + 16));
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a, b));
      const float dg = amax / 127.f, inv = amax > 0.f ? 127.f / amax : 0.f;
      const __m512 vinv = _mm512_set1_ps(inv);
      // round to nearest (even), as llama.cpp's quantize_row_q8_1 does with roundf up to ties
      const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb), vinv));
      const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16), vinv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + g * kBlock), _mm512_cvtsepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + g * kBlock + 16), _mm512_cvtsepi32_epi8(q1));
      d[m * (K / kBlock) + g] = dg;
      sum[m * (K / kBlock) + g] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_loadu_ps(xb), _mm512_loadu_ps(xb + 16)));
      for (int64_t l = 0; l < kBlock / 4; ++l) {
        const int8_t* ql = qr + g * kBlock + 4 * l;
        lane_d[m * (K / 4) + g * 8 + l] = dg;
        lane_off[m * (K / 4) + g * 8 + l] = -128 * (ql[0] + ql[1] + ql[2] + ql[3]);
      }
    }
  }
};

// How many 32-wide blocks ahead the int4 kernel prefetches (8 x 256 bytes of codes). With it a native step of the
// default model takes 0.90x (batch 1) and 0.83x (batch 8) as long, 1 thread (docs/BENCHMARKS.md); in a standalone
// A/B over a model's worth of weights 4 blocks ahead gained less and 16 no more.
constexpr int64_t kPrefetchBlocks = 8;

// Prefetch what block g + kPrefetchBlocks of tile t reads: its codes (the tiles are one sequential stream, so past
// the tile's end these are the next tile's, which this thread reads next) and its scale pairs, one cache line at a
// stride of N x 4 bytes that the hardware prefetcher does not follow. A prefetch never faults, so no bounds check on
// the codes.
inline void prefetch_int4(const uint8_t* p, const uint16_t* sz, int64_t blocks_per_scale, int64_t N, int64_t t, int64_t g,
                          int64_t G) {
  for (int c = 0; c < 4; ++c) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBlocks * 256 + 64 * c), _MM_HINT_T0);
  if (g + kPrefetchBlocks < G) {
    const int64_t group = (g + kPrefetchBlocks) / blocks_per_scale;
    _mm_prefetch(reinterpret_cast<const char*>(sz + (group * N + t * kTileRows) * 2), _MM_HINT_T0);
  }
}

// y[m, 16t .. 16t + 15] (+)= the int4 weight's tile t against rows m0 .. m0 + MB - 1 of x.
// codes: the tile layout above; sz: bf16 [G / blocks_per_scale, N, 2] (scale, zero), one pair per
// `blocks_per_scale` 32-wide blocks; y: [M, ldy] float.
template <int MB>
inline void int4_tile(const uint8_t* codes, const uint16_t* sz, int64_t blocks_per_scale, int64_t N, int64_t t,
                      const QuantRows& x, int64_t m0, float* y, int64_t ldy, const float* bias, bool accumulate) {
  const int64_t G = x.K / kBlock;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i high16 = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  __m512 acc[MB];
  for (int m = 0; m < MB; ++m) acc[m] = _mm512_setzero_ps();
  const uint8_t* tile = codes + t * G * 256;
  for (int64_t group = 0; group < G / blocks_per_scale; ++group) {
    // 16 (scale, zero) bf16 pairs: the scale is the low half of each 32-bit lane, the zero the high half.
    const __m512i pairs = _mm512_loadu_si512(sz + (group * N + t * kTileRows) * 2);
    const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
    const __m512 zero = _mm512_castsi512_ps(_mm512_and_si512(pairs, high16));
    const __m512 offset = _mm512_fnmadd_ps(_mm512_set1_ps(8.f), scale, zero);  // w = code * scale + (zero - 8 scale)
    for (int64_t g = group * blocks_per_scale; g < (group + 1) * blocks_per_scale; ++g) {
      const uint8_t* p = tile + g * 256;
      prefetch_int4(p, sz, blocks_per_scale, N, t, g, G);
      __m512i w[8];
      for (int c = 0; c < 4; ++c) {
        const __m512i v = _mm512_loadu_si512(p + 64 * c);
        w[c] = _mm512_and_si512(v, low4);
        w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      }
      for (int m = 0; m < MB; ++m) {
        const int64_t row = m0 + m;
        const int32_t* xq = reinterpret_cast<const int32_t*>(x.q.data() + row * x.K + g * kBlock);
        __m512i dot = _mm512_setzero_si512();
        for (int j = 0; j < 8; ++j) dot = _mm512_dpbusd_epi32(dot, w[j], _mm512_set1_epi32(xq[j]));
        const __m512 scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(x.d[row * G + g]));
        acc[m] = _mm512_fmadd_ps(scaled, scale, acc[m]);
        acc[m] = _mm512_fmadd_ps(offset, _mm512_set1_ps(x.sum[row * G + g]), acc[m]);
      }
    }
  }
  const __m512 b = bias ? _mm512_loadu_ps(bias + t * kTileRows) : _mm512_setzero_ps();
  for (int m = 0; m < MB; ++m) {
    float* out = y + (m0 + m) * ldy + t * kTileRows;
    __m512 v = _mm512_add_ps(acc[m], b);
    if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(out));
    _mm512_storeu_ps(out, v);
  }
}

// The sums of the 16 lanes of a, b, c and d, as one 4-lane vector (one transposing tree instead of four reductions).
inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // per 128-bit lane: a b a b
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));  // c d c d
  const __m512 abcd = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                                    _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));  // a b c d
  const __m512 half = _mm512_add_ps(abcd, _mm512_shuffle_f32x4(abcd, abcd, 0x4E));  // 128-bit lanes 0+2, 1+3
  return _mm512_castps512_ps128(_mm512_add_ps(half, _mm512_shuffle_f32x4(half, half, 0xB1)));
}

// How far ahead of its loads the int8 kernel prefetches the weight rows, which it reads as one sequential stream
// (the same distance as the int4 kernel's 8 blocks). A prefetch never faults: no bounds check past the last row.
constexpr int64_t kInt8PrefetchBytes = kPrefetchBlocks * 256;

// y[m, n] (+)= int8 row n of the weight against rows m0 .. m0 + MB - 1 of x, for NR consecutive rows n.
// w: int8 [N, K]; scales: bf16 [N].
template <int NR, int MB>
inline void int8_rows(const int8_t* w, const uint16_t* scales, int64_t n, const QuantRows& x, int64_t m0, float* y,
                      int64_t ldy, const float* bias, bool accumulate) {
  const int64_t K = x.K;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[NR][MB];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 64) {
    // A tail of 32 (K = 64j + 32) fills the low eight lanes; the high ones stay zero.
    const __mmask64 bytes = K - k >= 64 ? ~__mmask64{0} : (__mmask64{1} << (K - k)) - 1;
    const __mmask16 lanes = K - k >= 64 ? __mmask16(0xFFFF) : __mmask16(0x00FF);
    __m512i wv[NR];
    for (int r = 0; r < NR; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (n + r) * K + k + kInt8PrefetchBytes), _MM_HINT_T0);
      wv[r] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(bytes, w + (n + r) * K + k), flip);  // masked bytes meet q = 0
    }
    for (int m = 0; m < MB; ++m) {
      const int64_t row = m0 + m;
      const __m512i xq = _mm512_maskz_loadu_epi8(bytes, x.q.data() + row * K + k);
      const __m512i off = _mm512_maskz_loadu_epi32(lanes, x.lane_off.data() + row * (K / 4) + k / 4);
      const __m512 ld = _mm512_maskz_loadu_ps(lanes, x.lane_d.data() + row * (K / 4) + k / 4);
      for (int r = 0; r < NR; ++r) {
        acc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(off, wv[r], xq)), ld, acc[r][m]);
      }
    }
  }
  // One reduction tree for every NR, so a row's sum does not depend on how many rows met it (batch invariance).
  // sum4 reduces each of its four vectors on its own, so up to four rows share one tree (zeros fill the rest).
  float sums[NR][MB];
  const __m512 zero = _mm512_setzero_ps();
  for (int m = 0; m < MB; ++m) {
    for (int r0 = 0; r0 < NR; r0 += 4) {
      float four[4];
      _mm_storeu_ps(four, sum4(acc[r0][m], r0 + 1 < NR ? acc[r0 + 1][m] : zero, r0 + 2 < NR ? acc[r0 + 2][m] : zero,
                               r0 + 3 < NR ? acc[r0 + 3][m] : zero));
      for (int r = r0; r < std::min(r0 + 4, NR); ++r) sums[r][m] = four[r - r0];
    }
  }
  for (int r = 0; r < NR; ++r) {
    uint32_t bits = static_cast<uint32_t>(scales[n + r]) << 16;
    float s;
    std::memcpy(&s, &bits, sizeof(s));
    const float b = bias ? bias[n + r] : 0.f;
    for (int m = 0; m < MB; ++m) {
      float* out = y + (m0 + m) * ldy + n + r;
      const float v = sums[r][m] * s + b;
      *out = accumulate ? *out + v : v;
    }
  }
}

// Call f.template operator()<MB>() with MB = rows (1 .. kMaxRows) as a compile-time constant.
template <typename F>
inline void with_rows(int64_t rows, F&& f) {
  switch (rows) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    case 5: return f.template operator()<5>();
    case 6: return f.template operator()<6>();
    case 7: return f.template operator()<7>();
    default: return f.template operator()<8>();
  }
}

}  // namespace r1

#endif  // R1_VNNI
