// The fused op's autograd node in C++ (built on first use by dyt_bench/ops/triton/native.py).
//
// Why: a Python autograd.Function costs the autograd engine a Python call, its context object and tuple packing on
// every forward and backward; at the sizes of host-bound models that alone is most of a LayerNorm's whole
// forward + backward (docs/benchmarks.md). This node does what op.py's planned path does with no Python in it: the
// forward launches one compiled Triton kernel, the backward two, straight through the CUDA driver's cuLaunchKernel
// on the current stream, and the parameter gradients are assembled as views of one float32 buffer.
//
// The kernels are compiled by Triton from Python. Python describes each launch once per call signature (a "Launch":
// the CUfunction, grid, block, shared memory and the kernel's parameters in order, each one a pointer slot filled per
// call or a constant), so a call here only fills in data pointers. A "Variant" is one signature's forward and
// backward for one set of inputs that need gradients.

#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>

#include <dlfcn.h>

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

namespace dyt_bench_native {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

typedef int (*LaunchKernelFn)(void* function, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x,
                              unsigned block_y, unsigned block_z, unsigned shared, void* stream, void** params,
                              void** extra);

LaunchKernelFn launch_kernel_fn() {
  static LaunchKernelFn fn = [] {
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    TORCH_CHECK(lib != nullptr, "dyt_bench native node: cannot open libcuda.so.1");
    auto f = reinterpret_cast<LaunchKernelFn>(dlsym(lib, "cuLaunchKernel"));
    TORCH_CHECK(f != nullptr, "dyt_bench native node: libcuda.so.1 has no cuLaunchKernel");
    return f;
  }();
  return fn;
}

// pointer slots of a launch's parameters
enum Slot : int { X = 0, ALPHA, SHIFT, WEIGHT, BIAS, Y, DY, DX, PART, SCAL, OUT, N_SLOTS };
constexpr int MAX_PARAMS = 48;

struct Launch {
  uint64_t function = 0;
  unsigned grid_x = 0, grid_y = 0, block = 0, shared = 0;
  std::vector<int> slots;       // per parameter: a Slot, or -1 for a constant
  std::vector<int64_t> values;  // the constants (little-endian cells: an i32 reads the low four bytes)

  void run(const std::array<uint64_t, N_SLOTS>& ptrs, void* stream) const {
    int64_t cells[MAX_PARAMS];
    void* params[MAX_PARAMS];
    const size_t n = slots.size();
    for (size_t i = 0; i < n; ++i) {
      cells[i] = slots[i] >= 0 ? static_cast<int64_t>(ptrs[slots[i]]) : values[i];
      params[i] = &cells[i];
    }
    int rc = launch_kernel_fn()(reinterpret_cast<void*>(function), grid_x, grid_y, 1, block, 1, 1, shared, stream,
                                params, nullptr);
    TORCH_CHECK(rc == 0, "dyt_bench native node: cuLaunchKernel failed with CUDA error ", rc);
  }
};

Launch make_launch(uint64_t function, int64_t grid_x, int64_t grid_y, int64_t block, int64_t shared,
                   std::vector<int64_t> slots, std::vector<int64_t> values) {
  TORCH_CHECK(slots.size() == values.size() && slots.size() <= MAX_PARAMS,
              "dyt_bench native node: a launch takes at most ", MAX_PARAMS, " parameters, one value each");
  Launch l;
  l.function = function;
  l.grid_x = static_cast<unsigned>(grid_x);
  l.grid_y = static_cast<unsigned>(grid_y);
  l.block = static_cast<unsigned>(block);
  l.shared = static_cast<unsigned>(shared);
  for (auto s : slots) {
    TORCH_CHECK(s >= -1 && s < N_SLOTS, "dyt_bench native node: bad pointer slot ", s);
    l.slots.push_back(static_cast<int>(s));
  }
  l.values = std::move(values);
  return l;
}

struct Variant {
  Launch fwd, bwd_first, bwd_second;
  int64_t n_part = 0, n_buffer = 0, channels = 0;
  bool need_dx = true;
  int64_t device = 0;
};

// Variants live as long as the process: Python keeps at most a bounded number of signatures (launch.MAX_PLANS), and
// an autograd node holds a raw pointer to its variant.
std::vector<std::unique_ptr<Variant>>& registry() {
  static std::vector<std::unique_ptr<Variant>> r;
  return r;
}

inline uint64_t ptr_of(const at::Tensor& t) { return reinterpret_cast<uint64_t>(t.data_ptr()); }

inline void* current_stream(int64_t device) {
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
}

struct DyTNativeNode : public torch::autograd::Function<DyTNativeNode> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& alpha,
                            const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& shift, int64_t variant) {
    const Variant* v = reinterpret_cast<const Variant*>(variant);
    std::array<uint64_t, N_SLOTS> ptrs{};
    ptrs[X] = ptr_of(x);
    ptrs[ALPHA] = ptr_of(alpha);
    ptrs[SHIFT] = shift.has_value() ? ptr_of(*shift) : ptrs[ALPHA];
    ptrs[WEIGHT] = weight.has_value() ? ptr_of(*weight) : ptrs[X];
    ptrs[BIAS] = bias.has_value() ? ptr_of(*bias) : ptrs[X];
    at::Tensor y = at::empty_like(x);
    ptrs[Y] = ptr_of(y);
    v->fwd.run(ptrs, current_stream(v->device));
    ctx->save_for_backward({x});
    ctx->saved_data["v"] = variant;
    ctx->saved_data["alpha"] = alpha;
    if (weight.has_value()) ctx->saved_data["weight"] = *weight;
    if (shift.has_value()) ctx->saved_data["shift"] = *shift;
    ctx->saved_data["bias_dtype"] =
        bias.has_value() ? static_cast<int64_t>(bias->scalar_type()) : static_cast<int64_t>(-1);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Variant* v = reinterpret_cast<const Variant*>(ctx->saved_data["v"].toInt());
    at::Tensor x = ctx->get_saved_variables()[0];
    at::Tensor alpha = ctx->saved_data["alpha"].toTensor();
    auto found_w = ctx->saved_data.find("weight");
    auto found_s = ctx->saved_data.find("shift");
    at::Tensor weight = found_w != ctx->saved_data.end() ? found_w->second.toTensor() : at::Tensor();
    at::Tensor shift = found_s != ctx->saved_data.end() ? found_s->second.toTensor() : at::Tensor();
    const int64_t bias_dtype = ctx->saved_data["bias_dtype"].toInt();

    at::Tensor dy = grads[0];
    if (dy.scalar_type() != x.scalar_type()) dy = dy.to(x.scalar_type());
    if (dy.strides() != x.strides()) dy = at::empty_like(x).copy_(dy);  // into x's memory order
    std::array<uint64_t, N_SLOTS> ptrs{};
    ptrs[X] = ptr_of(x);
    ptrs[ALPHA] = ptr_of(alpha);
    ptrs[SHIFT] = shift.defined() ? ptr_of(shift) : ptrs[ALPHA];
    ptrs[WEIGHT] = weight.defined() ? ptr_of(weight) : ptrs[X];
    ptrs[DY] = ptr_of(dy);
    at::Tensor dx;
    if (v->need_dx) {
      dx = at::empty_like(x);
      ptrs[DX] = ptr_of(dx);
    } else {
      ptrs[DX] = ptrs[X];
    }
    auto f32 = x.options().dtype(at::kFloat);
    at::Tensor buffer = at::empty({v->n_buffer}, f32);
    at::Tensor out = at::empty({2 * v->channels + 2}, f32);
    ptrs[PART] = ptr_of(buffer);
    ptrs[SCAL] = ptrs[PART] + 4 * static_cast<uint64_t>(v->n_part);
    ptrs[OUT] = ptr_of(out);
    void* stream = current_stream(v->device);
    v->bwd_first.run(ptrs, stream);
    v->bwd_second.run(ptrs, stream);

    const int64_t c = v->channels;
    // needs_input_grad counts the tensor inputs given (x, alpha, then weight, bias, shift where present)
    const size_t i_w = 2, i_b = i_w + (weight.defined() ? 1 : 0), i_s = i_b + (bias_dtype >= 0 ? 1 : 0);
    variable_list result(6);
    if (ctx->needs_input_grad(0)) result[0] = dx;
    if (ctx->needs_input_grad(1)) {
      at::Tensor g = out.narrow(0, 2 * c, 1);
      if (alpha.dim() != 1) g = g.view(alpha.sizes());
      result[1] = g.scalar_type() == alpha.scalar_type() ? g : g.to(alpha.scalar_type());
    }
    if (weight.defined() && ctx->needs_input_grad(i_w)) {
      at::Tensor g = out.narrow(0, 0, c);
      result[2] = g.scalar_type() == weight.scalar_type() ? g : g.to(weight.scalar_type());
    }
    if (bias_dtype >= 0 && ctx->needs_input_grad(i_b)) {
      at::Tensor g = out.narrow(0, c, c);
      auto dtype = static_cast<at::ScalarType>(bias_dtype);
      result[3] = g.scalar_type() == dtype ? g : g.to(dtype);
    }
    if (shift.defined() && ctx->needs_input_grad(i_s)) {
      at::Tensor g = out.narrow(0, 2 * c + 1, 1);
      if (shift.dim() != 1) g = g.view(shift.sizes());
      result[4] = g.scalar_type() == shift.scalar_type() ? g : g.to(shift.scalar_type());
    }
    return result;
  }
};

int64_t add_variant(std::vector<int64_t> fwd, std::vector<int64_t> fwd_slots, std::vector<int64_t> fwd_values,
                    std::vector<int64_t> first, std::vector<int64_t> first_slots,
                    std::vector<int64_t> first_values, std::vector<int64_t> second,
                    std::vector<int64_t> second_slots, std::vector<int64_t> second_values, int64_t n_part,
                    int64_t n_buffer, int64_t channels, bool need_dx, int64_t device) {
  // fwd / first / second: (function, grid_x, grid_y, block, shared)
  TORCH_CHECK(fwd.size() == 5 && first.size() == 5 && second.size() == 5,
              "dyt_bench native node: a launch is (function, grid_x, grid_y, block, shared)");
  auto v = std::make_unique<Variant>();
  v->fwd = make_launch(fwd[0], fwd[1], fwd[2], fwd[3], fwd[4], fwd_slots, fwd_values);
  v->bwd_first = make_launch(first[0], first[1], first[2], first[3], first[4], first_slots, first_values);
  v->bwd_second = make_launch(second[0], second[1], second[2], second[3], second[4], second_slots, second_values);
  v->n_part = n_part;
  v->n_buffer = n_buffer;
  v->channels = channels;
  v->need_dx = need_dx;
  v->device = device;
  int64_t handle = reinterpret_cast<int64_t>(v.get());
  registry().push_back(std::move(v));
  return handle;
}

// One call: None when a pointer is not 16-byte aligned (the compiled kernels assume it; the caller takes the
// ordinary launch), else y, with this node in the graph when grad mode is on.
std::optional<at::Tensor> apply(int64_t variant, const at::Tensor& x, const at::Tensor& alpha,
                                const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                const std::optional<at::Tensor>& shift) {
  uint64_t bits = ptr_of(x) | ptr_of(alpha);
  if (weight.has_value()) bits |= ptr_of(*weight);
  if (bias.has_value()) bits |= ptr_of(*bias);
  if (shift.has_value()) bits |= ptr_of(*shift);
  if (bits & 15) return std::nullopt;
  return DyTNativeNode::apply(x, alpha, weight, bias, shift, variant);
}

}  // namespace dyt_bench_native

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("add_variant", &dyt_bench_native::add_variant, "register one signature's launches; returns its handle");
  m.def("apply", &dyt_bench_native::apply, "the op through a registered variant (None: a pointer is not 16-byte aligned)");
  m.attr("N_SLOTS") = static_cast<int>(dyt_bench_native::N_SLOTS);
}
