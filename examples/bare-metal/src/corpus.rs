//! The training text and its character vocabulary, both fixed at compile
//! time so the tokens live in flash and the vocabulary size can size the
//! model's buffers.

/// What the firmware learns: short and repetitive, so a one-block model of
/// about a thousand parameters can learn most of it in a few hundred steps.
pub const TEXT: &[u8] = b"a small model on a small chip learns a small text. \
it reads one letter, guesses the next, and fixes its guess. \
it adds the same numbers in the same order, so every run ends the same way.\n";

/// Length of the text in tokens (one per byte).
pub const LEN: usize = TEXT.len();

/// Byte ↔ id tables; ids are given in increasing byte order, so the
/// vocabulary is a pure function of the text.
struct Vocab {
    id_of: [u8; 256],
    byte_of: [u8; 256],
    size: usize,
}

const NONE: u8 = u8::MAX;

const fn build_vocab(text: &[u8]) -> Vocab {
    let mut seen = [false; 256];
    let mut i = 0;
    while i < text.len() {
        seen[text[i] as usize] = true;
        i += 1;
    }
    let mut v = Vocab {
        id_of: [NONE; 256],
        byte_of: [0; 256],
        size: 0,
    };
    let mut b = 0;
    while b < 256 {
        if seen[b] {
            v.id_of[b] = v.size as u8;
            v.byte_of[v.size] = b as u8;
            v.size += 1;
        }
        b += 1;
    }
    v
}

const VOCAB_TABLES: Vocab = build_vocab(TEXT);

/// Number of distinct bytes in [`TEXT`]: the model's `vocab_size`.
pub const VOCAB: usize = VOCAB_TABLES.size;

// Ids are stored as u8 and NONE marks "not in the text": with every byte value
// present there would be no room for it (impossible for this text, but cheap
// to rule out).
const _: () = assert!(VOCAB < NONE as usize);

const fn encode<const N: usize>(text: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = VOCAB_TABLES.id_of[text[i] as usize];
        i += 1;
    }
    out
}

/// [`TEXT`] as token ids, in flash.
pub static TOKENS: [u8; LEN] = encode::<LEN>(TEXT);

/// The byte a token id stands for (`?` for an id outside the vocabulary).
pub fn byte_of(id: u32) -> u8 {
    if (id as usize) < VOCAB {
        VOCAB_TABLES.byte_of[id as usize]
    } else {
        b'?'
    }
}
