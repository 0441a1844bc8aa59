//! Quorum arithmetic: what a strict majority is. Elections and commits both
//! rest on it, so it stands alone with its own table of cases.

/// True when `yes` is a strict majority of `of` (more than half).
pub fn is_majority(yes: usize, of: usize) -> bool {
    // yes > of/2 exactly: 2 of 4 is not a majority, 3 of 5 is. No overflow.
    yes <= of && yes > of / 2
}

/// The fewest yes votes that are a strict majority of `of`.
pub fn smallest_majority(of: usize) -> usize {
    of / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::is_majority;

    #[test]
    fn strict_majority_table() {
        let cases = [
            (0, 0, false),
            (0, 1, false),
            (1, 1, true),
            (1, 2, false),
            (2, 2, true),
            (1, 3, false),
            (2, 3, true),
            (2, 4, false),
            (3, 4, true),
            (2, 5, false),
            (3, 5, true),
            (4, 9, false),
            (5, 9, true),
            (usize::MAX, usize::MAX, true),
            (3, 2, false),
        ];
        for (yes, of, want) in cases {
            assert_eq!(is_majority(yes, of), want, "{yes} of {of}");
        }
    }

    #[test]
    fn the_smallest_majority_is_a_majority_and_one_less_is_not() {
        for of in 1..50 {
            let m = super::smallest_majority(of);
            assert!(is_majority(m, of) && !is_majority(m - 1, of), "of {of}");
        }
    }
}
