// Host emulation of the CUDA features the tensor-core kernels (and the generic linear backward) use, so
// that they are compiled by g++ and checked on machines without a GPU (tests/emulation/). Not part of
// any build of the library.
//
// Each CUDA thread of a block runs as a fiber (its own stack, FiberContext), all of a block's on the calling
// OS thread; __syncthreads is a barrier of the block, and every warp-collective operation (shuffles,
// ldmatrix, mma.sync) is an exchange through the warp's slots between two barriers of the warp; a
// fiber runs until it waits at a barrier, then the next ready one runs. cp.async copies land only when
// their thread waits for them. Why fibers: with one OS thread per CUDA thread, every barrier put 31
// threads to sleep in the kernel and woke them (a case spent two thirds of its time in futex calls),
// and a loaded machine (CI's parallel phases) made the tests up to 10x slower; a fiber switch is a
// fraction of a microsecond and does not depend on the machine's load. The schedules are fixed (a thread
// runs as far as it can before the next; Schedule below), so a missing barrier gives the same wrong
// results on every run rather than by chance; a barrier not all threads reach aborts, naming the deadlock.
// Under ThreadSanitizer each fiber is one of TSan's fibers, switched without synchronising, and the
// emulation tells TSan what orders their accesses on a GPU: the block's barriers (each arrival a release,
// each departure an acquire; a warp's collective operations order nothing, as on Volta and later: Barrier)
// and the launch (what the host wrote before it, what it reads after it). TSan then reports two fibers'
// accesses to one address that no barrier orders, whatever order they ran in; the scheduler's own
// bookkeeping and the warps' slots are hidden from it (race_detector below).
// mma.sync and ldmatrix follow the fragment layouts of the PTX ISA ("Matrix Fragments for
// mma.m16n8k16 with floating point type", "ldmatrix"), written out here independently of the
// kernels' own index arithmetic. Products are summed in float32 (the order differs
// from the hardware's, which is unspecified anyway).
// Include it before anything else with ACTATTN_WARP_EMULATION defined.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#if !defined(__x86_64__) || defined(__CET__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_THREAD__)
#define ACTATTN_EMULATION_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ACTATTN_EMULATION_TSAN 1
#endif
#endif
#ifdef ACTATTN_EMULATION_TSAN
#include <sanitizer/tsan_interface.h>
// TSan's dynamic annotations (its runtime defines them; no header declares them).
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

#define __launch_bounds__(...)

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

inline int64_t min(int64_t a, int64_t b) { return std::min(a, b); }
[[noreturn]] inline void __trap() { std::abort(); }

namespace actattn {
namespace cuda {
namespace mma {
struct FragA;
struct FragC;
}  // namespace mma

namespace emulation {

// What ThreadSanitizer is told (nothing without it). Its fibers are switched without synchronising, so
// that only the orderings a GPU guarantees (release and acquire below) order two fibers' accesses.
namespace race_detector {
#ifdef ACTATTN_EMULATION_TSAN
inline void* create_fiber() { return __tsan_create_fiber(0); }
inline void* current_fiber() { return __tsan_get_current_fiber(); }
// Right before the switch to that fiber (switch_context).
inline void switch_to(void* fiber) { __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync); }
inline void release(void* sync) { __tsan_release(sync); }
inline void acquire(void* sync) { __tsan_acquire(sync); }
// The scheduler's bookkeeping (which fiber waits, runs next), written by every fiber in turn: on a GPU
// the hardware's, so hidden from TSan while one of these is alive (it never spans a fiber switch: TSan
// counts it per fiber).
class Unobserved {
 public:
  Unobserved() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~Unobserved() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
  Unobserved(const Unobserved&) = delete;
  Unobserved& operator=(const Unobserved&) = delete;
};
#else
inline void* create_fiber() { return nullptr; }
inline void* current_fiber() { return nullptr; }
inline void switch_to(void*) {}
inline void release(void*) {}
inline void acquire(void*) {}
struct Unobserved {};
#endif
}  // namespace race_detector

// A cp.async copy issued by this thread and not yet waited for.
struct PendingCopy {
  void* shared;
  const void* global;
  int bytes;
  bool inside;
};
// The running fiber's copies (each fiber has its own list: under TSan one list shared by all would be
// written by every fiber).
inline thread_local std::vector<PendingCopy>* pending_copies = nullptr;

[[noreturn]] inline void copies_not_waited_for(unsigned thread) {
  std::fprintf(stderr, "warp emulation: thread %u ended with %zu cp.async copies not waited for\n", thread,
               pending_copies->size());
  std::abort();
}

// The order in which the fibers of a block run; the tests run every case under each, since each hides
// missing barriers the other exposes (check_under_every_schedule, tests/emulation/emulated_tensors.h):
//  - kTakingTurns: first come, first run, so the warps take turns at each collective operation and
//    advance together; a warp that reads a tile before another warp's copies into it land reads NaN.
//  - kWarpByWarp: a warp's collective operation lets that warp run on before any other, so each warp runs
//    from one __syncthreads to the next before the next warp starts: a warp's copy into a tile lands
//    before a later warp reads it, and its reads come before a later warp's copies. A barrier missing
//    between every warp's last read of a tile and the next copy into it gives wrong results only here.
enum class Schedule { kTakingTurns, kWarpByWarp };
inline Schedule schedule = Schedule::kTakingTurns;
inline const char* schedule_name(Schedule s) { return s == Schedule::kTakingTurns ? "turns" : "warp-by-warp"; }

// The schedules a test runs each case under: both, but under TSan one, whose reports do not depend on the
// order the fibers ran in.
inline std::vector<Schedule> schedules_to_test() {
#ifdef ACTATTN_EMULATION_TSAN
  return {Schedule::kTakingTurns};
#else
  return {Schedule::kTakingTurns, Schedule::kWarpByWarp};
#endif
}

// A fiber's saved execution context and the switch between two. swapcontext also saves and restores the
// signal mask, a system call per switch: 38 % of the plain emulation's time and 3 of a TSan case's 10 s.
// So on x86-64 the switch is the stack pointer and what the System V ABI has a function preserve (rbx,
// rbp, r12-r15, MXCSR and the x87 control word), and swapcontext remains the portable way (and the one
// under Intel CET, whose shadow stack would refuse the return into a new fiber).
#if defined(__x86_64__) && !defined(__CET__)
struct FiberContext {
  void* stack_pointer = nullptr;
};

// Pushes the preserved registers, stores the stack pointer in *save, loads `restore` and pops what the
// same function (or start_context) left there; returns into the code that switched away from it.
__attribute__((naked, noinline)) inline void switch_stacks(void** /*save: rdi*/, void* /*restore: rsi*/) {
  asm("pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "subq $16, %rsp\n\t"
      "stmxcsr 8(%rsp)\n\t"
      "fnstcw (%rsp)\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "ldmxcsr 8(%rsp)\n\t"
      "fldcw (%rsp)\n\t"
      "addq $16, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret");
}

// Lays out a new fiber's stack as switch_stacks leaves a switched-away one, returning into entry() (which
// must never return) with the stack aligned as at a function's entry.
inline void start_context(FiberContext& context, char* stack, size_t bytes, void (*entry)()) {
  auto* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15});
  uint64_t* sp = top - 10;
  sp[0] = 0x037F;  // x87 control word: the default (round to nearest, exceptions masked)
  sp[1] = 0x1F80;  // MXCSR: the default
  for (int r = 2; r < 8; ++r) sp[r] = 0;  // r15, r14, r13, r12, rbx, rbp
  sp[8] = reinterpret_cast<uint64_t>(entry);
  sp[9] = 0;  // entry's return address (it never returns); entry starts with sp + 10 = 8 mod 16
  context.stack_pointer = sp;
}

// From the running fiber (whose context is `from`) to `to`, which is race_detector_fiber to TSan.
inline void switch_context(FiberContext& from, FiberContext& to, void* race_detector_fiber) {
  void* restore;
  {
    race_detector::Unobserved bookkeeping;  // written by the caller of every launch, read by every fiber
    restore = to.stack_pointer;
  }
  race_detector::switch_to(race_detector_fiber);
  switch_stacks(&from.stack_pointer, restore);
}
#else
struct FiberContext {
  ucontext_t context;
};

inline void start_context(FiberContext& context, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&context.context);
  context.context.uc_stack.ss_sp = stack;
  context.context.uc_stack.ss_size = bytes;
  context.context.uc_link = nullptr;
  makecontext(&context.context, entry, 0);
}

inline void switch_context(FiberContext& from, FiberContext& to, void* race_detector_fiber) {
  race_detector::switch_to(race_detector_fiber);
  swapcontext(&from.context, &to.context);
}
#endif

// What a fiber runs on: its stack and its race-detector fiber. Made once per thread index for the
// process's life: made and freed per launch, under TSan (which marks a freed stack's whole range) they
// cost more than the kernels.
struct FiberResources {
  // 256 KiB, allocated and never touched beyond what is used: the deepest kernel frame is 4 KiB at -O0
  // (g++ -fstack-usage), the emulated mma's 2 KiB more.
  static constexpr size_t kStackBytes = 256 * 1024;
  std::unique_ptr<char[]> stack = std::make_unique_for_overwrite<char[]>(kStackBytes);
  void* race_detector_fiber = race_detector::create_fiber();
};

inline const std::vector<FiberResources>& fiber_resources(int threads) {
  static std::vector<FiberResources> resources;
  if (static_cast<int>(resources.size()) < threads) resources.resize(threads);
  return resources;
}

// The fibers of one block and the order they run in.
class FiberScheduler {
 public:
  FiberScheduler(int threads, std::function<void()> body) : fibers_(threads), body_(std::move(body)) {
    const std::vector<FiberResources>& resources = fiber_resources(threads);
    for (int t = 0; t < threads; ++t) {
      fibers_[t].stack = resources[t].stack.get();
      fibers_[t].race_detector_fiber = resources[t].race_detector_fiber;
    }
  }

  // Runs body() once as every thread of the block; returns when all have returned. What the caller
  // wrote before is visible to every thread, and what they wrote to the caller after.
  void run_block() {
    for (int t = 0; t < static_cast<int>(fibers_.size()); ++t) {
      Fiber& fiber = fibers_[t];
      start_context(fiber.context, fiber.stack, FiberResources::kStackBytes, &FiberScheduler::fiber_main);
      fiber.done = false;
      ready_.push_back(t);
    }
    caller_race_detector_fiber_ = race_detector::current_fiber();
    race_detector::release(&block_start_);
    running_ = kNone;
    switch_to_next();
    race_detector::acquire(&block_end_);
    for (const Fiber& fiber : fibers_) {
      if (!fiber.done) {  // every fiber waits at a barrier that not all threads reach
        std::fprintf(stderr, "warp emulation: deadlock, thread %d never returned (a barrier not all threads reach)\n",
                     static_cast<int>(&fiber - fibers_.data()));
        std::abort();
      }
    }
  }

  // The running fiber waits in `waiters` until wake() moves them back to the ready queue: at its front
  // (they run next) or its end.
  void suspend(std::vector<int>& waiters) {
    {
      race_detector::Unobserved bookkeeping;
      waiters.push_back(running_);
    }
    switch_to_next();
  }
  void wake(std::vector<int>& waiters, bool run_next) {
    race_detector::Unobserved bookkeeping;
    ready_.insert(run_next ? ready_.begin() : ready_.end(), waiters.begin(), waiters.end());
    waiters.clear();
  }

 private:
  static constexpr int kNone = -1;
  struct Fiber {
    FiberContext context;
    char* stack = nullptr;
    std::vector<PendingCopy> pending_copies;
    void* race_detector_fiber = nullptr;
    bool done = false;
  };

  static void fiber_main();

  // To the first ready fiber, or back to run_block() when none is. The thread-local state the kernels
  // see (threadIdx, pending cp.async copies) is the running fiber's.
  void switch_to_next() {
    FiberContext* from_context;
    FiberContext* to_context;
    void* to_race_detector_fiber;
    {
      race_detector::Unobserved bookkeeping;
      const int from = running_;
      int to = kNone;
      if (!ready_.empty()) {
        to = ready_.front();
        ready_.pop_front();
      }
      if (to == from) return;
      from_context = from == kNone ? &caller_context_ : &fibers_[from].context;
      to_context = to == kNone ? &caller_context_ : &fibers_[to].context;
      to_race_detector_fiber = to == kNone ? caller_race_detector_fiber_ : fibers_[to].race_detector_fiber;
      if (to != kNone) {
        pending_copies = &fibers_[to].pending_copies;
        threadIdx = make_uint3(to, 0, 0);
      }
      running_ = to;
    }
    switch_context(*from_context, *to_context, to_race_detector_fiber);
  }

  std::vector<Fiber> fibers_;
  std::function<void()> body_;
  std::deque<int> ready_;
  int running_ = kNone;
  FiberContext caller_context_;
  void* caller_race_detector_fiber_ = nullptr;
  // Addresses the race detector's launch orderings are attached to (static: a fiber orders itself after
  // the block's start before it reads anything, current_scheduler included).
  static inline char block_start_ = 0, block_end_ = 0;
};

inline thread_local FiberScheduler* current_scheduler = nullptr;

inline void FiberScheduler::fiber_main() {
  race_detector::acquire(&block_start_);
  FiberScheduler& self = *current_scheduler;
  self.body_();
  if (!pending_copies->empty()) copies_not_waited_for(threadIdx.x);  // a tile fetched and never used
  race_detector::release(&block_end_);
  {
    race_detector::Unobserved bookkeeping;
    self.fibers_[self.running_].done = true;
  }
  self.switch_to_next();  // never returns here: a done fiber is not made ready again
}

// std::barrier's arrive_and_wait for fibers; a warp's barrier wakes its fibers to run next under
// kWarpByWarp. For the race detector each arrival at a block's barrier releases and each departure
// acquires the phase's address: two addresses taken in turn, since a fiber leaving one phase can run on
// and arrive at the next before another has left the first (which must not see that fiber's later
// accesses as ordered before its own); by the phase after, every fiber has left the first. A warp's
// barrier orders nothing for it: the warp's collective operations (shuffles, ldmatrix, mma.sync) exchange
// registers, and since Volta they do not order the lanes' other memory accesses (only __syncwarp and
// __syncthreads do), so a lane reading shared memory another lane of its warp wrote, with no barrier
// between them, is reported (the slots the lanes exchange through are hidden from TSan, as registers).
class Barrier {
 public:
  explicit Barrier(int threads, bool of_warp = false) : threads_(threads), of_warp_(of_warp) {}
  void arrive_and_wait() {
    char* phase_address;
    bool last;
    {
      race_detector::Unobserved bookkeeping;
      phase_address = of_warp_ ? nullptr : &phase_addresses_[phase_ % 2];
      if (phase_address) race_detector::release(phase_address);
      last = ++arrived_ == threads_;
      if (last) {
        arrived_ = 0;
        ++phase_;
      }
    }
    if (last) {
      current_scheduler->wake(waiters_, of_warp_ && schedule == Schedule::kWarpByWarp);
    } else {
      current_scheduler->suspend(waiters_);
    }
    if (phase_address) race_detector::acquire(phase_address);
  }

 private:
  int threads_;
  bool of_warp_;
  int arrived_ = 0;
  unsigned phase_ = 0;
  std::vector<int> waiters_;
  char phase_addresses_[2] = {};
};

struct WarpSlots {
  Barrier barrier{32, true};
  float value[32];
  double wide_value[32];  // float64 shuffles (the generic kernels' warp sums)
  uint32_t word[32];       // 32-bit integer shuffles (dropout_fragments.cuh's Philox words)
  const void* address[32];
  uint32_t a[32][4];
  uint32_t b[32][2];
};

struct BlockState {
  explicit BlockState(int threads) : barrier(threads), warps(threads / 32), shared(1 << 16) {}
  Barrier barrier;
  std::vector<WarpSlots> warps;
  std::vector<uint4> shared;  // 1 MiB of dynamic shared memory, 16-byte aligned
};

inline thread_local BlockState* current_block = nullptr;

inline WarpSlots& warp() { return current_block->warps[threadIdx.x / 32]; }
inline int lane() { return static_cast<int>(threadIdx.x % 32); }

// Runs body() as a grid of blocks of `threads` threads (a multiple of 32), one block after another
// (x fastest), each starting with its shared memory zeroed.
inline void launch(dim3 grid, int threads, const std::function<void()>& body) {
  const unsigned blocks = grid.x * grid.y;
  if (blocks == 0) return;
  BlockState block(threads);
  FiberScheduler scheduler(threads, body);
  current_block = &block;
  current_scheduler = &scheduler;
  blockDim = dim3(threads);
  gridDim = grid;
  for (unsigned i = 0; i < blocks; ++i) {
    blockIdx = make_uint3(i % grid.x, i / grid.x, 0);
    std::fill(block.shared.begin(), block.shared.end(), uint4{});
    scheduler.run_block();
  }
  current_scheduler = nullptr;
  current_block = nullptr;
}

// The 16-bit element `index` (0 = low half) of a register, as float.
template <typename T>
inline float element(uint32_t reg, int index) {
  const uint16_t bits = static_cast<uint16_t>(reg >> (16 * index));
  T value;
  std::memcpy(&value, &bits, 2);
  return static_cast<float>(value);
}

}  // namespace emulation
}  // namespace cuda
}  // namespace actattn

inline void __syncthreads() { actattn::cuda::emulation::current_block->barrier.arrive_and_wait(); }

// The GPU's approximate division (within 2 ulp for divisors below 2^126); exact here.
inline float __fdividef(float a, float b) { return a / b; }

namespace actattn {
namespace cuda {
namespace emulation {

// A shuffle through the warp's slots: this lane's value in, lane ^ lane_mask's out. The slots stand for
// registers, so TSan does not see them (Barrier says why).
template <typename V>
V exchange_xor(V (&slots)[32], V value, int lane_mask) {
  {
    race_detector::Unobserved registers;
    slots[lane()] = value;
  }
  warp().barrier.arrive_and_wait();
  V other;
  {
    race_detector::Unobserved registers;
    other = slots[lane() ^ lane_mask];
  }
  warp().barrier.arrive_and_wait();
  return other;
}

}  // namespace emulation
}  // namespace cuda
}  // namespace actattn

inline float __shfl_xor_sync(unsigned /*mask*/, float value, int lane_mask) {
  using namespace actattn::cuda::emulation;
  return exchange_xor(warp().value, value, lane_mask);
}

inline double __shfl_xor_sync(unsigned /*mask*/, double value, int lane_mask) {
  using namespace actattn::cuda::emulation;
  return exchange_xor(warp().wide_value, value, lane_mask);
}

inline uint32_t __shfl_xor_sync(unsigned /*mask*/, uint32_t value, int lane_mask) {
  using namespace actattn::cuda::emulation;
  return exchange_xor(warp().word, value, lane_mask);
}

namespace actattn {
namespace cuda {

inline float fast_exp2(float x) { return std::exp2(x); }

template <typename T>
inline T* dynamic_shared() {
  return reinterpret_cast<T*>(emulation::current_block->shared.data());
}

namespace mma {

// ldmatrix .x4: lanes 8j .. 8j+7 give the row addresses of matrix j; without .trans lane L receives
// (row L/4, columns 2(L%4), 2(L%4)+1) of each matrix, with .trans (rows 2(L%4), 2(L%4)+1, column L/4).
inline void ldmatrix_x4(uint32_t (&r)[4], const void* shared, bool transpose) {
  using namespace emulation;
  WarpSlots& w = warp();
  const int l = lane();
  {
    race_detector::Unobserved registers;  // the slots stand for registers (Barrier says why)
    w.address[l] = shared;
  }
  w.barrier.arrive_and_wait();
  const void* rows[32];
  {
    race_detector::Unobserved registers;
    std::copy(w.address, w.address + 32, rows);
  }
  for (int j = 0; j < 4; ++j) {  // reads of shared memory: TSan sees these
    auto at = [&](int row, int col) { return static_cast<const uint16_t*>(rows[8 * j + row])[col]; };
    const uint16_t lo = transpose ? at(2 * (l % 4), l / 4) : at(l / 4, 2 * (l % 4));
    const uint16_t hi = transpose ? at(2 * (l % 4) + 1, l / 4) : at(l / 4, 2 * (l % 4) + 1);
    r[j] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  w.barrier.arrive_and_wait();
}

// cp.async: the copy lands at the issuing thread's cp_async_wait_all(), and until then its destination
// reads as all bits set (NaN in every type the kernels use). A kernel that reads a tile before waiting
// for it, or before the barrier that follows the wait, or that issues a copy into a tile another warp
// still reads, then computes with NaN or stale values, and its emulated results fail.
template <int kBytes>
inline void cp_async(void* shared, const void* global, bool inside) {
  std::memset(shared, 0xFF, kBytes);
  emulation::pending_copies->push_back({shared, global, kBytes, inside});
}

inline void cp_async_wait_all() {
  for (const emulation::PendingCopy& copy : *emulation::pending_copies) {
    if (copy.inside) {
      std::memcpy(copy.shared, copy.global, copy.bytes);
    } else {
      std::memset(copy.shared, 0, copy.bytes);
    }
  }
  emulation::pending_copies->clear();
}

// mma.sync m16n8k16, row.col, float32 accumulators: D = A B + C with
//   A element a_i of lane L: row L/4 + 8 [i in {2,3,6,7}], column 2(L%4) + (i&1) + 8 [i >= 4]
//   B element b_i:           row 2(L%4) + (i&1) + 8 [i >= 2], column L/4
//   C element c_i:           row L/4 + 8 [i >= 2],             column 2(L%4) + (i&1)
template <typename T, typename FragAType, typename FragCType>
inline void emulated_mma(FragCType& d, const FragAType& a, uint32_t b0, uint32_t b1) {
  using namespace emulation;
  WarpSlots& w = warp();
  const int l = lane();
  {
    race_detector::Unobserved registers;  // the slots stand for registers (Barrier says why)
    std::memcpy(w.a[l], a.x, sizeof(w.a[l]));
    w.b[l][0] = b0;
    w.b[l][1] = b1;
  }
  w.barrier.arrive_and_wait();
  // Only the rows of A and columns of B this lane's four outputs need (rows l/4 and l/4 + 8, held by
  // lanes 4(l/4) .. 4(l/4) + 3; columns 2(l%4) and 2(l%4) + 1, held by lanes 8(l%4) .. 8(l%4) + 7): the
  // whole of A and B in every lane was most of the emulation's arithmetic.
  float A[16][16], B[16][8];
  {
    race_detector::Unobserved registers;
    for (int src = 4 * (l / 4); src < 4 * (l / 4) + 4; ++src) {
      const int g = src / 4, t = src % 4;
      for (int i = 0; i < 8; ++i) {
        const int row = g + ((i == 2 || i == 3 || i == 6 || i == 7) ? 8 : 0);
        const int col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
        A[row][col] = element<T>(w.a[src][i / 2], i % 2);
      }
    }
    for (int src = 8 * (l % 4); src < 8 * (l % 4) + 8; ++src) {
      const int g = src / 4, t = src % 4;
      for (int i = 0; i < 4; ++i) B[2 * t + (i & 1) + (i >= 2 ? 8 : 0)][g] = element<T>(w.b[src][i / 2], i % 2);
    }
  }
  w.barrier.arrive_and_wait();
  for (int i = 0; i < 4; ++i) {
    const int row = l / 4 + (i >= 2 ? 8 : 0), col = 2 * (l % 4) + (i & 1);
    float sum = 0.f;
    for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
    d.x[i] += sum;
  }
}

}  // namespace mma
}  // namespace cuda
}  // namespace actattn
