// One decode step of a Llama-family model (RMSNorm, grouped-query attention with RoPE, SwiGLU) as a single
// native call: every sequence of the batch feeds one token, and the logits of its next token come back.
//
// Why: in eager PyTorch a decode step of SmolLM2-135M is ~1,600 small aten calls (30 layers x ~50), each
// 1-3 us of dispatch, plus ~9 module calls per layer; that overhead is as large as the matmuls themselves.
// Here the small ops are plain loops (norm + cast, rope + KV write, attention over the paged cache,
// SiLU * mul, residual adds) and only the matmuls go through ATen, on the same kernels as the eager path
// (model/layers/linear.py), so the numbers match eager up to summation order.
//
// Built at run time by model/serving/compiled_step.py (c++ -O3 -march=native), loaded with torch.ops.load_library.
// Each loop is a named torch.profiler range (r1::...), so profiles of the native step still say where time goes.
// Shapes: B sequences, D model dim, H / KV query / key-value heads, hd head dim, F ffn dim, V vocab.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define R1_AVX2 1
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define R1_VNNI 1  // the int8-activation kernels (int8_kernels.h); without them the matmuls stay on ATen
#endif
#include <omp.h>

#include "int8_kernels.h"

namespace {

using at::Tensor;

// A linear layer in one of model/layers/linear.py's formats, chosen by the weight's dtype:
// float32 [O, K]; int8 [O, K] + bf16 scales [O]; packed int4 uint8 [O, K/2] + bf16 scales_and_zeros [K/g, O, 2].
struct LinearWeights {
  Tensor weight, scales, bias;  // scales / bias: empty when absent
  Tensor packed;                // int4 codes in int8_kernels.h's tile layout (empty: none)
  // int64 [K] (act-order GPTQ, linear.py's `input_order`): input column k of the matmul is x[order[k]]; empty: x as is.
  Tensor input_order;

  bool quantized() const { return weight.scalar_type() != at::kFloat; }

  int64_t in_features() const { return weight.size(1) * (weight.scalar_type() == at::kByte ? 2 : 1); }

  // x: [B, K], bf16 when quantized() else float32 -> [B, O], bf16 when quantized() (the consumers read it as
  // is, instead of a conversion op per matmul) unless there is a bias, which is added in float32.
  Tensor operator()(const Tensor& x_in) const {
    const Tensor x = input_order.numel() ? x_in.index_select(1, input_order) : x_in;
    if (weight.scalar_type() == at::kFloat) {
      return bias.numel() ? at::addmm(bias, x, weight.t()) : at::mm(x, weight.t());
    }
    Tensor y = weight.scalar_type() == at::kChar
                   ? at::_weight_int8pack_mm(x, weight, scales)
                   : at::_weight_int4pack_mm_for_cpu(x, weight, x.size(1) / scales.size(0), scales);
    return bias.numel() ? y.to(at::kFloat).add_(bias) : y;
  }

  // The row the matmul reads for input row x [K]: x itself, or its columns gathered into `gathered` (>= K floats).
  const float* input_row(const float* x, float* gathered) const {
    if (!input_order.numel()) return x;
    const int64_t* order = input_order.data_ptr<int64_t>();
    const int64_t K = input_order.numel();
    for (int64_t k = 0; k < K; ++k) gathered[k] = x[order[k]];
    return gathered;
  }
};

// Call f with the data of a float32 or bf16 tensor (loops below are written once for both).
template <typename F>
void with_data(const Tensor& t, F&& f) {
  if (t.scalar_type() == at::kBFloat16) {
    f(t.data_ptr<at::BFloat16>());
  } else {
    f(t.data_ptr<float>());
  }
}

// exp for the softmax and SiLU loops: Cody-Waite range reduction and a degree-6 polynomial (as Cephes' expf,
// within ~2 ulp), branch-free so the compiler vectorizes the loops that call it; std::exp does not vectorize.
// Below e^-87 it returns 0 rather than a subnormal: arithmetic on subnormals is ~100x slower, and softmax
// rows here are peaked enough (attention sinks) that most of a row would land there.
inline float fast_exp(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
  const float xc = std::min(std::max(x, -87.f), 88.7f);
  const float n = (xc * 1.44269504f + kRound) - kRound;
  const float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.f ? 0.f : p * scale;
}

// x[b] += y[b] for the residual stream (y as the matmul left it).
void add_into(Tensor& x, const Tensor& y) {
  float* dst = x.data_ptr<float>();
  const int64_t n = x.numel();
  with_data(y, [&](const auto* src) {
    for (int64_t i = 0; i < n; ++i) dst[i] += static_cast<float>(src[i]);
  });
}

// Dot product in 16 independent lanes, so it vectorizes without reassociating a single running sum.
inline float dot(const float* a, const float* b, int64_t n) {
  constexpr int64_t kLanes = 16;
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += a[i + l] * b[i + l];
  }
  float sum = 0.f;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

// scores[s] = q . keys[s] for S keys of hd floats each (keys are scattered over the paged pool).
void dot_keys(const float* q, const float* const* keys, int64_t S, int64_t hd, float* scores) {
  int64_t s = 0;
#ifdef R1_AVX2
  // Eight keys at a time, each in its own accumulator, reduced together by a tree of horizontal adds: one
  // reduction per eight dot products instead of one per product.
  if (hd % 8 == 0) {
    for (; s + 8 <= S; s += 8) {
      __m256 acc[8];
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
      for (int64_t d = 0; d < hd; d += 8) {
        const __m256 qv = _mm256_loadu_ps(q + d);
        for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys[s + i] + d), acc[i]);
      }
      const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
      const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
      _mm256_storeu_ps(scores + s, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31)));
    }
  }
#endif
  for (; s < S; ++s) scores[s] = dot(q, keys[s], hd);
}

// out[d] = sum_s p[s] * values[s][d].
template <int64_t kHeadDim>
void weighted_sum_fixed(const float* p, const float* const* values, int64_t S, float* out) {
#ifdef R1_AVX2
  // Accumulators stay in registers across the keys (the auto-vectorizer gathers across s instead).
  __m256 acc[kHeadDim / 8];
  for (int64_t c = 0; c < kHeadDim / 8; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t s = 0; s < S; ++s) {
    const __m256 ps = _mm256_set1_ps(p[s]);
    const float* v = values[s];
    for (int64_t c = 0; c < kHeadDim / 8; ++c) acc[c] = _mm256_fmadd_ps(ps, _mm256_loadu_ps(v + 8 * c), acc[c]);
  }
  for (int64_t c = 0; c < kHeadDim / 8; ++c) _mm256_storeu_ps(out + 8 * c, acc[c]);
#else
  std::fill(out, out + kHeadDim, 0.f);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t d = 0; d < kHeadDim; ++d) out[d] += p[s] * values[s][d];
  }
#endif
}

void weighted_sum(const float* p, const float* const* values, int64_t S, int64_t hd, float* out) {
  if (hd == 64) return weighted_sum_fixed<64>(p, values, S, out);
  if (hd == 128) return weighted_sum_fixed<128>(p, values, S, out);
  std::fill(out, out + hd, 0.f);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t d = 0; d < hd; ++d) out[d] += p[s] * values[s][d];
  }
}

inline void store(float* dst, int64_t i, float v) { dst[i] = v; }
inline void store(at::BFloat16* dst, int64_t i, float v) { dst[i] = at::BFloat16(v); }

// out[b] = x[b] / rms(x[b]) * w, in float, then stored as float or bf16 (what the next matmul takes).
template <typename Out>
void rms_norm_rows(const float* x, const float* w, Out* out, int64_t B, int64_t D, float eps) {
  for (int64_t b = 0; b < B; ++b) {
    const float* row = x + b * D;
    const float sum = dot(row, row, D);
    const float inv = 1.f / std::sqrt(sum / D + eps);
    for (int64_t d = 0; d < D; ++d) store(out + b * D, d, row[d] * inv * w[d]);
  }
}

Tensor rms_norm(const Tensor& x, const Tensor& w, float eps, bool to_bf16) {
  RECORD_FUNCTION("r1::rms_norm", c10::ArrayRef<const c10::IValue>{});
  const int64_t B = x.size(0), D = x.size(1);
  Tensor out = at::empty({B, D}, x.options().dtype(to_bf16 ? at::kBFloat16 : at::kFloat));
  if (to_bf16) {
    rms_norm_rows(x.data_ptr<float>(), w.data_ptr<float>(), out.data_ptr<at::BFloat16>(), B, D, eps);
  } else {
    rms_norm_rows(x.data_ptr<float>(), w.data_ptr<float>(), out.data_ptr<float>(), B, D, eps);
  }
  return out;
}

#ifdef R1_VNNI
int64_t out_features(const LinearWeights& w) {
  return w.weight.scalar_type() == at::kByte ? w.scales.size(1) : w.weight.size(0);
}

// y [M, N] (+)= x W^T (+ bias): this thread's share of W's output rows. Called by every thread of the step's
// parallel region; the worksharing loop ends on a barrier.
void matmul_share(const LinearWeights& w, const r1::QuantRows& x, float* y, bool accumulate) {
  const int64_t M = x.M, N = out_features(w);
  const float* bias = w.bias.numel() ? w.bias.data_ptr<float>() : nullptr;
  const auto* scales = reinterpret_cast<const uint16_t*>(w.scales.data_ptr<at::BFloat16>());
  if (w.weight.scalar_type() == at::kByte) {
    const uint8_t* codes = w.packed.data_ptr<uint8_t>();
    const int64_t blocks_per_scale = x.K / r1::kBlock / w.scales.size(0);  // a GPTQ/AWQ group spans several blocks
#pragma omp for schedule(static)
    for (int64_t t = 0; t < N / r1::kTileRows; ++t) {
      for (int64_t m0 = 0; m0 < M; m0 += r1::kMaxRows) {
        r1::with_rows(M - m0, [&]<int MB>() {
          r1::int4_tile<MB>(codes, scales, blocks_per_scale, N, t, x, m0, y, N, bias, accumulate);
        });
      }
    }
    return;
  }
  const int8_t* codes = w.weight.data_ptr<int8_t>();
  constexpr int64_t kRows = 4;  // weight rows per work item
#pragma omp for schedule(static)
  for (int64_t n0 = 0; n0 < N; n0 += kRows) {
    for (int64_t m0 = 0; m0 < M; m0 += r1::kMaxRows) {
      r1::with_rows(M - m0, [&]<int MB>() {
        // As many weight rows at once as leave the accumulators in registers.
        constexpr int NR = MB <= 2 ? 4 : 2;
        int64_t n = n0;
        for (; n + NR <= std::min(n0 + kRows, N); n += NR) r1::int8_rows<NR, MB>(codes, scales, n, x, m0, y, N, bias, accumulate);
        for (; n < std::min(n0 + kRows, N); ++n) r1::int8_rows<1, MB>(codes, scales, n, x, m0, y, N, bias, accumulate);
      });
    }
  }
}

// Whether a linear layer can run on the int8-activation kernels: int4 with its tile layout (scale groups of a
// multiple of 32 columns), or int8, over an input width that is a multiple of 32.
bool kernel_fits(const LinearWeights& w) {
  if (w.scales.scalar_type() != at::kBFloat16 || !w.scales.is_contiguous() || !w.weight.is_contiguous()) return false;
  if (w.bias.numel() && (w.bias.scalar_type() != at::kFloat || !w.bias.is_contiguous())) return false;
  if (w.weight.scalar_type() == at::kByte) {  // int4: codes [N, K/2], scales [K/g, N, 2]
    if (w.weight.dim() != 2 || w.scales.dim() != 3) return false;
    const int64_t N = w.scales.size(1), K = w.in_features(), groups = w.scales.size(0);
    return w.weight.size(0) == N && N % r1::kTileRows == 0 && K % groups == 0 && (K / groups) % r1::kBlock == 0 &&
           w.packed.numel() == N * K / 2;
  }
  return w.weight.scalar_type() == at::kChar && w.weight.dim() == 2 && w.weight.size(1) % r1::kBlock == 0;
}

// One linear layer on the kernels, outside a decode step (the parity tests' entry point): x float [M, K] -> [M, N].
Tensor linear_int8(Tensor x, Tensor weight, Tensor scales, Tensor bias, Tensor packed) {
  const LinearWeights w{weight, scales, bias, packed};
  TORCH_CHECK(kernel_fits(w), "linear_int8: weights the int8-activation kernels do not take");
  x = x.to(at::kFloat).contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = out_features(w);
  TORCH_CHECK(K == w.in_features(), "linear_int8: x has ", K, " features");
  r1::QuantRows rows;
  rows.resize(M, K);
  for (int64_t m = 0; m < M; ++m) rows.quantize(m, x.data_ptr<float>() + m * K);
  Tensor y = at::empty({M, N}, x.options());
#pragma omp parallel num_threads(at::get_num_threads())
  matmul_share(w, rows, y.data_ptr<float>(), false);
  return y;
}
#endif

bool int8_kernels_built() {
#ifdef R1_VNNI
  return true;
#else
  return false;
#endif
}

class DecodeModel : public torch::CustomClassHolder {
 public:
  // tensors: embedding [V, D], final norm [D], LM head (weight, scales, bias, packed, input order), cos [P, hd],
  //   signed sin [P, hd], then per layer: attention norm, qkv (w, s, b, p, o), wo (w, s, b, p, o), ffn norm,
  //   w13 (w, s, b, p, o), w2 (w, s, b, p, o).
  // sizes: n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, and 1 to use the int8-activation kernels where
  // this build and every weight allow (int8_kernels.h), 0 for ATen's.
  DecodeModel(std::vector<Tensor> tensors, std::vector<int64_t> sizes, double eps)
      : n_layers_(sizes.at(0)), n_heads_(sizes.at(1)), n_kv_heads_(sizes.at(2)), head_dim_(sizes.at(3)),
        ffn_dim_(sizes.at(4)), eps_(static_cast<float>(eps)) {
    TORCH_CHECK(static_cast<int64_t>(tensors.size()) == 9 + 22 * n_layers_, "DecodeModel: expected ",
                9 + 22 * n_layers_, " tensors, got ", tensors.size());
    size_t i = 0;
    embedding_ = tensors[i++];
    norm_ = tensors[i++];
    output_ = take_linear(tensors, i);
    cos_ = tensors[i++];
    sin_ = tensors[i++];
    for (int64_t l = 0; l < n_layers_; ++l) {
      Layer layer;
      layer.attention_norm = tensors[i++];
      layer.qkv = take_linear(tensors, i);
      layer.wo = take_linear(tensors, i);
      layer.ffn_norm = tensors[i++];
      layer.w13 = take_linear(tensors, i);
      layer.w2 = take_linear(tensors, i);
      layers_.push_back(layer);
    }
    kernels_ = sizes.at(5) != 0 && kernels_fit();
  }

  // Whether steps run on the int8-activation kernels (else on ATen's, as the eager model).
  bool uses_int8_kernels() const { return kernels_; }

  // tokens [B], positions [B] (each sequence's cached length = its new token's position),
  // write_slots [B] (cache slot of the new token), read_slots [B, S] (slots of positions 0..S-1; row b reads
  // positions[b] + 1 of them), kv [L, slots, 2 KV, hd] float32, written in place -> logits float32 [B, V].
  Tensor step(Tensor tokens, Tensor positions, Tensor write_slots, Tensor read_slots, Tensor kv) {
    TORCH_CHECK(kv.scalar_type() == at::kFloat && kv.is_contiguous() && kv.dim() == 4, "kv: contiguous float [L, slots, 2KV, hd]");
    TORCH_CHECK(kv.size(0) == n_layers_ && kv.size(2) == 2 * n_kv_heads_ && kv.size(3) == head_dim_, "kv shape mismatch");
    tokens = tokens.contiguous();
    positions = positions.contiguous();
    write_slots = write_slots.contiguous();
    read_slots = read_slots.contiguous();
    const int64_t B = tokens.size(0);
    const int64_t* pos = positions.data_ptr<int64_t>();
    const int64_t n_slots = kv.size(1);
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(pos[b] >= 0 && pos[b] < read_slots.size(1) && pos[b] < cos_.size(0), "position out of range");
      TORCH_CHECK(write_slots.data_ptr<int64_t>()[b] >= 0 && write_slots.data_ptr<int64_t>()[b] < n_slots, "slot out of range");
    }

    Tensor x = embedding_.index_select(0, tokens).to(at::kFloat).contiguous();  // [B, D]
#ifdef R1_VNNI
    if (kernels_) return step_int8(x, positions, write_slots, read_slots, kv);
#endif
    const int64_t layer_stride = kv.stride(0);
    for (int64_t l = 0; l < n_layers_; ++l) {
      const Layer& layer = layers_[l];
      float* kv_layer = kv.data_ptr<float>() + l * layer_stride;
      Tensor qkv = layer.qkv(rms_norm(x, layer.attention_norm, eps_, layer.qkv.quantized()));  // [B, (H + 2KV) hd]
      Tensor q = rope_and_store(qkv, positions, write_slots, kv_layer);                      // [B, H, hd]
      Tensor attended = attention(q, positions, read_slots, kv_layer, layer.wo.quantized());  // [B, H hd]
      add_into(x, layer.wo(attended));
      Tensor gate_up = layer.w13(rms_norm(x, layer.ffn_norm, eps_, layer.w13.quantized()));  // [B, 2F]
      add_into(x, layer.w2(silu_mul(gate_up, layer.w2.quantized())));
    }
    return output_(rms_norm(x, norm_, eps_, output_.quantized())).to(at::kFloat);
  }

 private:
  struct Layer {
    Tensor attention_norm, ffn_norm;
    LinearWeights qkv, wo, w13, w2;
  };

  static LinearWeights take_linear(const std::vector<Tensor>& tensors, size_t& i) {
    LinearWeights w{tensors[i], tensors[i + 1], tensors[i + 2], tensors[i + 3], tensors[i + 4]};
    i += 5;
    const Tensor& order = w.input_order;
    if (order.numel()) {  // the kernels' gather reads x[order[k]] unchecked
      const int64_t K = w.in_features();
      TORCH_CHECK(order.scalar_type() == at::kLong && order.dim() == 1 && order.size(0) == K && order.is_contiguous(),
                  "DecodeModel: an input order of ", order.sizes(), " ", order.scalar_type(), " for ", K, " input features");
      TORCH_CHECK(order.min().item<int64_t>() >= 0 && order.max().item<int64_t>() < K,
                  "DecodeModel: an input order names columns outside 0..", K - 1);
    }
    return w;
  }

  // Rotate q and k of every row by its position (pairs (d, d + hd/2), as model/layers/rope.py), store k and v in the
  // cache at the row's write slot, and return the rotated queries.
  Tensor rope_and_store(const Tensor& qkv, const Tensor& positions, const Tensor& write_slots, float* kv_layer) const {
    RECORD_FUNCTION("r1::rope_kv_write", c10::ArrayRef<const c10::IValue>{});
    const int64_t B = qkv.size(0), H = n_heads_, KV = n_kv_heads_, hd = head_dim_, half = hd / 2;
    Tensor q = at::empty({B, H, hd}, qkv.options().dtype(at::kFloat));
    float* qdst = q.data_ptr<float>();
    const int64_t* pos = positions.data_ptr<int64_t>();
    const int64_t* slot = write_slots.data_ptr<int64_t>();
    with_data(qkv, [&](const auto* src) {
      for (int64_t b = 0; b < B; ++b) {
        const float* cos = cos_.data_ptr<float>() + pos[b] * hd;
        const float* sin = sin_.data_ptr<float>() + pos[b] * hd;
        const auto* row = src + b * (H + 2 * KV) * hd;
        float* cache_row = kv_layer + slot[b] * 2 * KV * hd;
        for (int64_t h = 0; h < H + KV; ++h) {
          const auto* in = row + h * hd;
          float* out = h < H ? qdst + (b * H + h) * hd : cache_row + (h - H) * hd;
          for (int64_t d = 0; d < half; ++d) {
            const float lo = static_cast<float>(in[d]), hi = static_cast<float>(in[d + half]);
            out[d] = lo * cos[d] + hi * sin[d];
            out[d + half] = hi * cos[d + half] + lo * sin[d + half];
          }
        }
        const auto* values = row + (H + KV) * hd;
        for (int64_t i = 0; i < KV * hd; ++i) cache_row[KV * hd + i] = static_cast<float>(values[i]);
      }
    });
    return q;
  }

  // Softmax attention of each row's single query over its positions[b] + 1 cached keys, read in place from the
  // paged pool (no gather); the H / KV query heads of a group reuse the group's key and value pointers.
  Tensor attention(const Tensor& q, const Tensor& positions, const Tensor& read_slots, const float* kv_layer,
                   bool to_bf16) const {
    RECORD_FUNCTION("r1::attention", c10::ArrayRef<const c10::IValue>{});
    const int64_t B = q.size(0), H = n_heads_, KV = n_kv_heads_, hd = head_dim_, group = H / KV;
    const int64_t S_max = read_slots.size(1);
    Tensor out = at::empty({B, H * hd}, q.options().dtype(to_bf16 ? at::kBFloat16 : at::kFloat));
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));
    const float* qs = q.data_ptr<float>();
    const int64_t* pos = positions.data_ptr<int64_t>();
    const int64_t* slots = read_slots.data_ptr<int64_t>();
    float* out_f = to_bf16 ? nullptr : out.data_ptr<float>();
    at::BFloat16* out_h = to_bf16 ? out.data_ptr<at::BFloat16>() : nullptr;
    int64_t work = 0;
    for (int64_t b = 0; b < B; ++b) work += (pos[b] + 1) * H * hd;
    // Below ~0.2M multiply-adds a parallel region costs more than it saves (batch 1 at short contexts).
    const int64_t grain = work < 200000 ? B * KV : 1;
    at::parallel_for(0, B * KV, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(static_cast<size_t>(S_max)), acc(static_cast<size_t>(hd));
      std::vector<const float*> keys(static_cast<size_t>(S_max)), values(static_cast<size_t>(S_max));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / KV, g = item % KV, S = pos[b] + 1;
        const int64_t* row_slots = slots + b * S_max;
        for (int64_t s = 0; s < S; ++s) {
          keys[s] = kv_layer + row_slots[s] * 2 * KV * hd + g * hd;
          values[s] = kv_layer + row_slots[s] * 2 * KV * hd + (KV + g) * hd;
        }
        for (int64_t j = 0; j < group; ++j) {  // the group's query heads share these keys and values
          const int64_t head = g * group + j;
          float* sc = scores.data();
          dot_keys(qs + (b * H + head) * hd, keys.data(), S, hd, sc);
          float m = -INFINITY;
          for (int64_t s = 0; s < S; ++s) m = std::max(m, sc[s] * scale);
          float sum = 0.f;
          for (int64_t s = 0; s < S; ++s) sc[s] = fast_exp(sc[s] * scale - m);
          for (int64_t s = 0; s < S; ++s) sum += sc[s];
          const float inv = 1.f / sum;
          for (int64_t s = 0; s < S; ++s) sc[s] *= inv;
          weighted_sum(sc, values.data(), S, hd, acc.data());
          const int64_t offset = b * H * hd + head * hd;
          if (out_h) {
            for (int64_t d = 0; d < hd; ++d) store(out_h, offset + d, acc[d]);
          } else {
            std::memcpy(out_f + offset, acc.data(), hd * sizeof(float));
          }
        }
      }
    });
    return out;
  }

  // gate_up [B, 2F] (gate, then up) -> silu(gate) * up [B, F], as float or bf16.
  Tensor silu_mul(const Tensor& gate_up, bool to_bf16) const {
    RECORD_FUNCTION("r1::silu_mul", c10::ArrayRef<const c10::IValue>{});
    const int64_t B = gate_up.size(0), F = ffn_dim_;
    Tensor out = at::empty({B, F}, gate_up.options().dtype(to_bf16 ? at::kBFloat16 : at::kFloat));
    with_data(gate_up, [&](const auto* in) {
      with_data(out, [&](auto* dst) {
        for (int64_t b = 0; b < B; ++b) {
          const auto* gate = in + b * 2 * F;
          const auto* up = gate + F;
          for (int64_t f = 0; f < F; ++f) {
            const float g = static_cast<float>(gate[f]);
            store(dst + b * F, f, g / (1.f + fast_exp(-g)) * static_cast<float>(up[f]));
          }
        }
      });
    });
    return out;
  }

  // Every linear int4 (with its tile layout) or int8, inner sizes multiples of 32, and a build with the kernels.
  bool kernels_fit() const {
#ifdef R1_VNNI
    if (!kernel_fits(output_)) return false;
    for (const Layer& layer : layers_) {
      if (!kernel_fits(layer.qkv) || !kernel_fits(layer.wo) || !kernel_fits(layer.w13) || !kernel_fits(layer.w2)) return false;
    }
    return true;
#else
    return false;
#endif
  }

#ifdef R1_VNNI
  // Rope at position pos: rotate-half pairs (d, d + hd/2) of one head's vector `in` into `dst`.
  void rotate_half(const float* in, float* dst, int64_t pos) const {
    const int64_t hd = head_dim_, half = hd / 2;
    const float* cos = cos_.data_ptr<float>() + pos * hd;
    const float* sin = sin_.data_ptr<float>() + pos * hd;
    for (int64_t d = 0; d < half; ++d) {
      const float lo = in[d], hi = in[d + half];
      dst[d] = lo * cos[d] + hi * sin[d];
      dst[d + half] = hi * cos[d + half] + lo * sin[d + half];
    }
  }

  // Rope and KV write of row b's key-value group g: its key rotated and its value stored at the row's write slot.
  // Every row's store ends (a barrier) before any row attends: rows of one sequence (draft tokens verified in one
  // step) read each other's keys.
  void store_group(const float* qkv, int64_t b, int64_t g, int64_t pos, int64_t write_slot, float* kv_layer) const {
    const int64_t H = n_heads_, KV = n_kv_heads_, hd = head_dim_;
    const float* row = qkv + b * (H + 2 * KV) * hd;
    float* cache_row = kv_layer + write_slot * 2 * KV * hd;
    rotate_half(row + (H + g) * hd, cache_row + g * hd, pos);
    std::memcpy(cache_row + (KV + g) * hd, row + (H + KV + g) * hd, hd * sizeof(float));
  }

  // Attention of row b's key-value group g: each of its query heads, rotated from qkv, over the row's
  // positions[b] + 1 keys (stored by store_group).
  void attend_group(const float* qkv, int64_t b, int64_t g, int64_t pos, const int64_t* row_slots,
                    const float* kv_layer, float* out, std::vector<float>& scratch, std::vector<const float*>& keys,
                    std::vector<const float*>& values) const {
    const int64_t H = n_heads_, KV = n_kv_heads_, hd = head_dim_, group = H / KV, S = pos + 1;
    const float* row = qkv + b * (H + 2 * KV) * hd;
    for (int64_t s = 0; s < S; ++s) {
      keys[s] = kv_layer + row_slots[s] * 2 * KV * hd + g * hd;
      values[s] = kv_layer + row_slots[s] * 2 * KV * hd + (KV + g) * hd;
    }
    float* q = scratch.data();
    float* sc = q + hd;
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));
    for (int64_t j = 0; j < group; ++j) {
      const int64_t head = g * group + j;
      rotate_half(row + head * hd, q, pos);
      dot_keys(q, keys.data(), S, hd, sc);
      float m = -INFINITY;
      for (int64_t s = 0; s < S; ++s) m = std::max(m, sc[s] * scale);
      float sum = 0.f;
      for (int64_t s = 0; s < S; ++s) sc[s] = fast_exp(sc[s] * scale - m);
      for (int64_t s = 0; s < S; ++s) sum += sc[s];
      const float inv = 1.f / sum;
      for (int64_t s = 0; s < S; ++s) sc[s] *= inv;
      weighted_sum(sc, values.data(), S, hd, out + b * H * hd + head * hd);
    }
  }

  // The step on the int8-activation kernels, in one parallel region: threads meet at a barrier after each phase
  // (norm + quantize, a matmul, rope + KV write, attention, ...), ten per layer, instead of an OpenMP region per matmul.
  Tensor step_int8(Tensor& x, const Tensor& positions, const Tensor& write_slots, const Tensor& read_slots, Tensor& kv) {
    RECORD_FUNCTION("r1::step_int8", c10::ArrayRef<const c10::IValue>{});
    const int64_t B = x.size(0), D = x.size(1), H = n_heads_, KV = n_kv_heads_, hd = head_dim_, F = ffn_dim_;
    const int64_t QKV = (H + 2 * KV) * hd, S_max = read_slots.size(1), V = out_features(output_);
    Tensor logits = at::empty({B, V}, x.options().dtype(at::kFloat));
    qkv_.resize(B * QKV);
    attended_.resize(B * H * hd);
    gate_up_.resize(B * 2 * F);
    x_d_.resize(B, D);
    x_o_.resize(B, H * hd);
    x_f_.resize(B, F);
    float* xs = x.data_ptr<float>();
    const int64_t* pos = positions.data_ptr<int64_t>();
    const int64_t* wslot = write_slots.data_ptr<int64_t>();
    const int64_t* rslots = read_slots.data_ptr<int64_t>();
    float* kv_base = kv.data_ptr<float>();
    const int64_t layer_stride = kv.stride(0);
#pragma omp parallel num_threads(at::get_num_threads())
    {
      std::vector<float> buffer(std::max(D, F)), gathered(std::max({D, F, H * hd})), scratch(hd + S_max);
      std::vector<const float*> keys(S_max), values(S_max);
      // Quantize row b of `linear`'s input from x into `rows`, its columns gathered first for an act-order weight.
      auto quantize = [&](r1::QuantRows& rows, int64_t b, const float* x, const LinearWeights& linear) {
        rows.quantize(b, linear.input_row(x, gathered.data()));
      };
      // Norm row b of x and quantize it into x_d_, the input of `linear`.
      auto norm_rows = [&](const Tensor& weight, const LinearWeights& linear) {
#pragma omp for schedule(static)
        for (int64_t b = 0; b < B; ++b) {
          rms_norm_rows(xs + b * D, weight.data_ptr<float>(), buffer.data(), 1, D, eps_);
          quantize(x_d_, b, buffer.data(), linear);
        }
      };
      for (int64_t l = 0; l < n_layers_; ++l) {
        const Layer& layer = layers_[l];
        float* kv_layer = kv_base + l * layer_stride;
        norm_rows(layer.attention_norm, layer.qkv);
        matmul_share(layer.qkv, x_d_, qkv_.data(), false);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < B * KV; ++item) {
          const int64_t b = item / KV;
          store_group(qkv_.data(), b, item % KV, pos[b], wslot[b], kv_layer);
        }
#pragma omp for schedule(static)
        for (int64_t item = 0; item < B * KV; ++item) {
          const int64_t b = item / KV;
          attend_group(qkv_.data(), b, item % KV, pos[b], rslots + b * S_max, kv_layer, attended_.data(), scratch,
                       keys, values);
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < B; ++b) quantize(x_o_, b, attended_.data() + b * H * hd, layer.wo);
        matmul_share(layer.wo, x_o_, xs, true);
        norm_rows(layer.ffn_norm, layer.w13);
        matmul_share(layer.w13, x_d_, gate_up_.data(), false);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < B; ++b) {
          const float* gate = gate_up_.data() + b * 2 * F;
          const float* up = gate + F;
          for (int64_t f = 0; f < F; ++f) buffer[f] = gate[f] / (1.f + fast_exp(-gate[f])) * up[f];
          quantize(x_f_, b, buffer.data(), layer.w2);
        }
        matmul_share(layer.w2, x_f_, xs, true);
      }
      norm_rows(norm_, output_);
      matmul_share(output_, x_d_, logits.data_ptr<float>(), false);
    }
    return logits;
  }
#endif

  int64_t n_layers_, n_heads_, n_kv_heads_, head_dim_, ffn_dim_;
  float eps_;
  bool kernels_ = false;
#ifdef R1_VNNI
  // The int8-kernel step's buffers, kept between steps (a model steps on one thread at a time: the scheduler's).
  std::vector<float> qkv_, attended_, gate_up_;
  r1::QuantRows x_d_, x_o_, x_f_;  // quantized inputs of qkv / w13 / LM head, wo, w2
#endif
  Tensor embedding_, norm_, cos_, sin_;
  LinearWeights output_;
  std::vector<Layer> layers_;
};

}  // namespace

TORCH_LIBRARY(r1_native, m) {
  m.class_<DecodeModel>("DecodeModel")
      .def(torch::init<std::vector<at::Tensor>, std::vector<int64_t>, double>())
      .def("step", &DecodeModel::step)
      .def("uses_int8_kernels", &DecodeModel::uses_int8_kernels);
  m.def("int8_kernels_built", &int8_kernels_built);
#ifdef R1_VNNI
  m.def("linear_int8", &linear_int8);
#endif
}
