// PodVector<T>: a growable array of trivially copyable T that grows and shrinks with
// realloc. The point is what it does NOT do: std::vector moves its elements into a fresh
// allocation on every doubling and again on shrink_to_fit, so a 2.4 MB array first-touches
// ~7 MB of new pages on the way; glibc's realloc of a large (mmap'd) block remaps it instead,
// so only the bytes finally held are ever touched. First touches are what a large LayerIndex
// build costs on a VM (~3 ms per MB).
//
// Elements past size() are uninitialized and never exposed. Move-only. Not thread-safe for
// writes; const methods are safe from any number of threads.
#ifndef LAZYPULL_FETCHER_FORMAT_POD_VECTOR_H_
#define LAZYPULL_FETCHER_FORMAT_POD_VECTOR_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace lazypull::format {

template <typename T>
class PodVector {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);

 public:
  PodVector() = default;
  ~PodVector() { std::free(data_); }
  PodVector(PodVector&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)) {}
  PodVector& operator=(PodVector&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  PodVector(const PodVector&) = delete;
  PodVector& operator=(const PodVector&) = delete;

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  bool empty() const { return size_ == 0; }
  T* data() { return data_; }
  const T* data() const { return data_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  T& back() { return data_[size_ - 1]; }

  void push_back(const T& value) {
    if (size_ == capacity_) {
      const T copy = value;  // `value` may live in the block about to move
      Reallocate(capacity_ < 8 ? 16 : capacity_ * 2);
      data_[size_++] = copy;
      return;
    }
    data_[size_++] = value;
  }
  // Appends `n` elements from `src` (which must not point into this vector).
  void append(const T* src, size_t n) {
    if (n == 0) return;
    if (capacity_ - size_ < n) Reallocate(std::max(size_ + n, capacity_ * 2));
    std::memcpy(static_cast<void*>(data_ + size_), src, n * sizeof(T));
    size_ += n;
  }
  void reserve(size_t n) {
    if (n > capacity_) Reallocate(n);
  }
  void shrink_to_fit() {
    if (capacity_ > size_) Reallocate(size_);
  }
  void clear() { size_ = 0; }

 private:
  void Reallocate(size_t n) {
    if (n == 0) {
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
      return;
    }
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    void* p = std::realloc(static_cast<void*>(data_), n * sizeof(T));
    if (p == nullptr) throw std::bad_alloc();
    data_ = static_cast<T*>(p);
    capacity_ = n;
  }

  T* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace lazypull::format

#endif  // LAZYPULL_FETCHER_FORMAT_POD_VECTOR_H_
