// Allowed-token bitmasks: ceil(vocab / 32) words per mask row, token t
// allowed when bit t % 32 of word t / 32 is set (the layout of xgrammar and
// llguidance). `MASKED` (some row of the dispatch reads a mask) is prepended
// by the host; without it no mask word is read. Needs `shared/chunk.wgsl`.

const NO_MASK: u32 = 0xFFFFFFFFu;

// A row reads the mask row its parameters name, or none (NO_MASK).
@group(0) @binding(6) var<storage, read> masks: array<u32>;

// The invocation's row mask: the word its mask starts at, and all ones when
// the row reads no mask (set by `set_row_mask` at each kernel's start; the
// OR keeps the loads branch-free).
var<private> mask_base: u32;
var<private> mask_none: u32;

fn set_row_mask(mask_row: u32) {
    if MASKED {
        let none = mask_row == NO_MASK;
        mask_base = select(mask_row * ((chunk.vocab + 31u) / 32u), 0u, none);
        mask_none = select(0u, 0xFFFFFFFFu, none);
    }
}

// The 32 mask bits of tokens i & ~31 .. (i & ~31) + 31 of the row.
fn mask_word(i: u32) -> u32 {
    return masks[mask_base + (i >> 5u)] | mask_none;
}

// Whether mask row `mask_row` (NO_MASK: none) allows token i: one token at a
// time, for kernels that read a few tokens of a row.
fn mask_allows(mask_row: u32, i: u32) -> bool {
    if !MASKED || mask_row == NO_MASK {
        return true;
    }
    return ((masks[mask_row * ((chunk.vocab + 31u) / 32u) + (i >> 5u)] >> (i & 31u)) & 1u) != 0u;
}
