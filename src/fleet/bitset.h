// A dense bitset over host slots, 64 bits a word, with a one-bit-per-word
// summary (bit w set <=> word w is non-zero) so a sparse set can be walked in
// words/64 steps. See docs/design.md ("Fleet index: own dense bitsets").
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace virtcap::fleet {

class SlotBits {
 public:
  void resize_words(std::size_t words) {
    if (words <= words_.size()) return;
    words_.resize(words, 0);
    summary_.resize((words + 63) / 64, 0);
  }
  std::size_t words() const { return words_.size(); }
  const std::uint64_t* data() const { return words_.data(); }
  const std::vector<std::uint64_t>& summary() const { return summary_; }

  bool test(std::uint32_t slot) const {
    const std::size_t w = slot / 64;
    return w < words_.size() && (words_[w] >> (slot % 64) & 1U) != 0;
  }
  void set(std::uint32_t slot) {
    const std::size_t w = slot / 64;
    resize_words(w + 1);
    const std::uint64_t bit = std::uint64_t{1} << (slot % 64);
    if ((words_[w] & bit) != 0) return;
    if (words_[w] == 0) {
      summary_[w / 64] |= std::uint64_t{1} << (w % 64);
      ++nonzero_words_;
    }
    words_[w] |= bit;
    ++count_;
  }
  void reset(std::uint32_t slot) {
    const std::size_t w = slot / 64;
    const std::uint64_t bit = std::uint64_t{1} << (slot % 64);
    if (w >= words_.size() || (words_[w] & bit) == 0) return;
    words_[w] &= ~bit;
    --count_;
    if (words_[w] == 0) {
      summary_[w / 64] &= ~(std::uint64_t{1} << (w % 64));
      --nonzero_words_;
    }
  }
  std::uint64_t word(std::size_t w) const { return w < words_.size() ? words_[w] : 0; }
  std::size_t count() const { return count_; }
  std::size_t nonzero_words() const { return nonzero_words_; }
  std::size_t memory_bytes() const {
    return (words_.capacity() + summary_.capacity()) * sizeof(std::uint64_t) + sizeof(*this);
  }

 private:
  std::vector<std::uint64_t> words_;
  std::vector<std::uint64_t> summary_;
  std::size_t count_ = 0;
  std::size_t nonzero_words_ = 0;
};

// Calls f(bit index) for each set bit of `word`, lowest first.
template <class F>
inline void for_each_bit(std::uint64_t word, F&& f) {
  while (word != 0) {
    f(static_cast<unsigned>(std::countr_zero(word)));
    word &= word - 1;
  }
}

}  // namespace virtcap::fleet
