//! What a coupon takes off an order.

use crate::money::Amount;
use serde::{Deserialize, Serialize};

/// A coupon's discount. Both kinds have a face value: the most it can ever be worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Discount {
    /// A fixed amount off.
    Fixed { amount: Amount },
    /// A share of the order in basis points (1/100 of a percent), rounded down
    /// to the minor unit, and never more than `max_amount`.
    Percent {
        basis_points: u16,
        max_amount: Amount,
    },
}

impl Discount {
    /// Checks the values serde cannot: a discount must be worth something.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Discount::Fixed { amount } if amount == Amount::ZERO => {
                Err("a fixed discount must have an amount of at least 1".into())
            }
            Discount::Percent { basis_points, .. } if !(1..=10_000).contains(&basis_points) => {
                Err(format!("basis_points {basis_points} is outside 1..=10000"))
            }
            Discount::Percent { max_amount, .. } if max_amount == Amount::ZERO => {
                Err("a percent discount must have a max_amount of at least 1".into())
            }
            _ => Ok(()),
        }
    }

    /// The most one coupon can take off: what it counts against a campaign's budget.
    pub fn face_value(&self) -> Amount {
        match *self {
            Discount::Fixed { amount } => amount,
            Discount::Percent { max_amount, .. } => max_amount,
        }
    }

    /// What this discount takes off an order of `order_amount`: never more than
    /// the order itself.
    pub fn amount_off(&self, order_amount: Amount) -> Amount {
        let off = match *self {
            Discount::Fixed { amount } => amount,
            Discount::Percent {
                basis_points,
                max_amount,
            } => {
                // i128: MAX_AMOUNT * 10_000 does not fit in i64.
                let share = i128::from(order_amount.minor()) * i128::from(basis_points) / 10_000;
                // share <= order_amount <= MAX_AMOUNT, so it fits.
                let share = Amount::new(share as i64).unwrap_or(order_amount);
                share.min(max_amount)
            }
        };
        off.min(order_amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(minor: i64) -> Amount {
        Amount::new(minor).expect("test amount in range")
    }

    #[test]
    fn fixed_never_exceeds_the_order() {
        let d = Discount::Fixed {
            amount: amount(500),
        };
        assert_eq!(d.amount_off(amount(10_000)), amount(500));
        assert_eq!(d.amount_off(amount(300)), amount(300));
        assert_eq!(d.amount_off(Amount::ZERO), Amount::ZERO);
    }

    #[test]
    fn percent_rounds_down_and_stops_at_max() {
        let d = Discount::Percent {
            basis_points: 1_250,
            max_amount: amount(1_000),
        };
        assert_eq!(d.amount_off(amount(999)), amount(124)); // 124.875 rounds down
        assert_eq!(d.amount_off(amount(8_000)), amount(1_000));
        assert_eq!(d.amount_off(amount(100_000)), amount(1_000));
    }

    #[test]
    fn percent_of_the_largest_order_does_not_overflow() {
        let max = amount(crate::money::MAX_AMOUNT);
        let d = Discount::Percent {
            basis_points: 10_000,
            max_amount: max,
        };
        assert_eq!(d.amount_off(max), max);
    }

    #[test]
    fn face_value_is_the_most_a_coupon_can_be_worth() {
        assert_eq!(
            Discount::Fixed { amount: amount(7) }.face_value(),
            amount(7)
        );
        let d = Discount::Percent {
            basis_points: 5_000,
            max_amount: amount(300),
        };
        assert_eq!(d.face_value(), amount(300));
    }

    #[test]
    fn worthless_discounts_are_refused() {
        assert!(
            Discount::Fixed {
                amount: Amount::ZERO
            }
            .validate()
            .is_err()
        );
        assert!(
            Discount::Percent {
                basis_points: 0,
                max_amount: amount(1)
            }
            .validate()
            .is_err()
        );
        assert!(
            Discount::Percent {
                basis_points: 10_001,
                max_amount: amount(1)
            }
            .validate()
            .is_err()
        );
        assert!(
            Discount::Percent {
                basis_points: 10,
                max_amount: Amount::ZERO
            }
            .validate()
            .is_err()
        );
    }

    /// The money arithmetic over the whole accepted range: no wrap-around, a
    /// discount never above the order or the coupon's face value, and the
    /// payable amount plus the discount is the order.
    mod properties {
        use super::*;
        use crate::money::MAX_AMOUNT;
        use proptest::prelude::*;

        fn any_amount() -> impl Strategy<Value = Amount> {
            prop_oneof![
                (0..=MAX_AMOUNT),
                Just(MAX_AMOUNT),
                (MAX_AMOUNT - 10_000..=MAX_AMOUNT),
                (0i64..10_000),
            ]
            .prop_map(amount)
        }

        fn any_discount() -> impl Strategy<Value = Discount> {
            prop_oneof![
                any_amount().prop_map(|amount| Discount::Fixed { amount }),
                (1u16..=10_000, any_amount()).prop_map(|(basis_points, max_amount)| {
                    Discount::Percent {
                        basis_points,
                        max_amount,
                    }
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

            #[test]
            fn a_discount_stays_within_the_order_and_its_face_value(
                discount in any_discount(),
                order in any_amount(),
            ) {
                let off = discount.amount_off(order);
                prop_assert!(off <= order);
                prop_assert!(off <= discount.face_value());
                let payable = order.saturating_sub(off);
                prop_assert_eq!(payable.minor() + off.minor(), order.minor());
            }
        }
    }
}
