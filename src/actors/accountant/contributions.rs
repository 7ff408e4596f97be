//! Contribution records: the rules a `BandwidthContribution` or `ComputeContribution` from a
//! peer must pass before this node believes it. Pure functions over the record, the keys
//! involved and what this node's own ledger says; the accountant does the I/O (ledger and
//! journal queries) and drops and counts what fails (`DropReason::BadContribution`).
//!
//! Who sends what:
//! - a node that paid a peer a bandwidth share sends that peer a `BandwidthContribution`
//!   (contributor = the payee, who carried the bytes; beneficiary = the payer, the sender),
//!   naming the payment; the contributor checks the payment was credited to it, from the
//!   sender, for exactly the record's amount;
//! - an executor whose escrow payment was credited sends the originator a
//!   `ComputeContribution` (contributor = the executor, the sender), naming the escrow; the
//!   originator checks its ledger released that escrow to the sender for exactly the
//!   record's amount, and its journal holds the task as assigned to the sender.
//!
//! A record is never worth more than the payment it names: nothing is credited on a
//! record, and a panel entry shows the amount the ledger holds.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::identity::{NodeId, PUBLIC_KEY_BYTES};
use crate::ledger::rules::incoming_transfer_id;
use crate::ledger::{TransferRecord, escrow_account, node_account};
use crate::messages::{BandwidthContribution, ComputeContribution, Vibe};

/// Longest period one bandwidth record may cover.
pub const PERIOD_MAX: Duration = Duration::days(1);
/// How far in this node's future a record's period may end (clock skew).
pub const FUTURE_SKEW: Duration = Duration::minutes(5);
/// Largest CPU or wall-clock time one compute record may claim, in seconds (a week).
pub const RUN_SECONDS_MAX: f64 = 7.0 * 24.0 * 3600.0;
/// Largest memory-time one compute record may claim, in GB·seconds (1 TB for a week).
pub const MEMORY_GB_SECONDS_MAX: f64 = 1024.0 * RUN_SECONDS_MAX;
/// The ledger's reason name of a bandwidth payment.
pub const BANDWIDTH_REASON: &str = "BandwidthShare";
/// The ledger's kind of an escrow paid out to its executor.
pub const RELEASE_KIND: &str = "release";

/// Why a contribution record is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContributionRefusal {
    /// The sender is not the party that makes this kind of record.
    #[error("the record is not the sender's to make")]
    WrongSigner,
    /// The record credits a node other than this one (bandwidth records only).
    #[error("the record concerns another node")]
    NotForThisNode,
    /// The record names no payment or escrow (an older node's, or a forged one).
    #[error("the record names no payment")]
    NoPaymentNamed,
    /// This node's ledger holds no such payment between the two nodes (yet).
    #[error("no payment {0} between the two nodes in this node's ledger")]
    UnknownPayment(Uuid),
    /// This node's journal holds no such task assigned to the sender (yet).
    #[error("no task {0} assigned to the sender in this node's journal")]
    UnknownTask(Uuid),
    /// The record's amount is not the payment's.
    #[error("the record claims {claimed} VIBE, the payment was {paid} VIBE")]
    AmountMismatch {
        /// What the record says.
        claimed: Vibe,
        /// What the ledger holds.
        paid: Vibe,
    },
    /// A quantity is zero, negative, not a number, or beyond what one record may claim.
    #[error("out of bounds: {0}")]
    OutOfBounds(&'static str),
}

impl ContributionRefusal {
    /// True when the refusal may only mean the record overtook its payment (the payment
    /// or the journal entry is not written yet): worth looking again shortly.
    pub fn may_be_early(&self) -> bool {
        matches!(
            self,
            ContributionRefusal::UnknownPayment(_) | ContributionRefusal::UnknownTask(_)
        )
    }
}

/// Check a `BandwidthContribution` sent by `sender_key` to this node (`own_key`), given
/// this node's bandwidth payments from the sender (`payments`, any order). Returns the
/// amount the ledger credited.
pub fn check_bandwidth(
    record: &BandwidthContribution,
    sender_key: &[u8; PUBLIC_KEY_BYTES],
    own_key: &[u8; PUBLIC_KEY_BYTES],
    now: DateTime<Utc>,
    payments: &[TransferRecord],
) -> Result<Vibe, ContributionRefusal> {
    if record.bytes == 0 {
        return Err(ContributionRefusal::OutOfBounds("no bytes"));
    }
    if record.amount == Vibe::ZERO {
        return Err(ContributionRefusal::OutOfBounds("no amount"));
    }
    if record.period_end < record.period_start
        || record.period_end - record.period_start > PERIOD_MAX
        || record.period_end > now + FUTURE_SKEW
    {
        return Err(ContributionRefusal::OutOfBounds("period"));
    }
    if record.beneficiary != NodeId::from_public_key(sender_key) {
        return Err(ContributionRefusal::WrongSigner);
    }
    if record.contributor != NodeId::from_public_key(own_key) {
        return Err(ContributionRefusal::NotForThisNode);
    }
    let payment_id = record
        .payment_id
        .ok_or(ContributionRefusal::NoPaymentNamed)?;
    let id = incoming_transfer_id(sender_key, &payment_id);
    let (payer, payee) = (node_account(sender_key), node_account(own_key));
    let payment = payments
        .iter()
        .find(|t| {
            t.id == id
                && t.from == payer
                && t.to == payee
                && t.reason.as_deref() == Some(BANDWIDTH_REASON)
        })
        .ok_or(ContributionRefusal::UnknownPayment(payment_id))?;
    same_amount(record.amount, payment.amount)
}

/// Check a `ComputeContribution` sent by `sender_key` to this node, the task's originator,
/// given the transfers of the escrow it names (`escrow_transfers`) and the node the
/// journal says the task was assigned to (`assigned_node`, `None` when the journal has no
/// such task). Returns the amount the escrow released to the sender.
pub fn check_compute(
    record: &ComputeContribution,
    sender_key: &[u8; PUBLIC_KEY_BYTES],
    escrow_transfers: &[TransferRecord],
    assigned_node: Option<&str>,
) -> Result<Vibe, ContributionRefusal> {
    let usage = &record.usage;
    let within = |value: f64, max: f64| value.is_finite() && (0.0..=max).contains(&value);
    if !within(usage.cpu_seconds, RUN_SECONDS_MAX)
        || !within(usage.wall_seconds, RUN_SECONDS_MAX)
        || !within(usage.memory_gb_seconds, MEMORY_GB_SECONDS_MAX)
    {
        return Err(ContributionRefusal::OutOfBounds("usage"));
    }
    if record.amount == Vibe::ZERO {
        return Err(ContributionRefusal::OutOfBounds("no amount"));
    }
    let sender = NodeId::from_public_key(sender_key);
    if record.contributor != sender {
        return Err(ContributionRefusal::WrongSigner);
    }
    let escrow_id = record
        .escrow_id
        .ok_or(ContributionRefusal::NoPaymentNamed)?;
    let (escrow, payee) = (escrow_account(&escrow_id), node_account(sender_key));
    let release = escrow_transfers
        .iter()
        .find(|t| t.kind == RELEASE_KIND && t.from == escrow && t.to == payee)
        .ok_or(ContributionRefusal::UnknownPayment(escrow_id))?;
    if assigned_node != Some(sender.to_string().as_str()) {
        return Err(ContributionRefusal::UnknownTask(record.task_id));
    }
    same_amount(record.amount, release.amount)
}

fn same_amount(claimed: Vibe, paid: Vibe) -> Result<Vibe, ContributionRefusal> {
    if claimed == paid {
        Ok(paid)
    } else {
        Err(ContributionRefusal::AmountMismatch { claimed, paid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::messages::{BandwidthPurpose, ComputeUsage};

    fn transfer(id: Uuid, from: String, to: String, amount: Vibe, kind: &str) -> TransferRecord {
        TransferRecord {
            id,
            from,
            to,
            amount,
            kind: kind.into(),
            task_id: None,
            reason: Some(if kind == RELEASE_KIND {
                "TaskExecution".into()
            } else {
                BANDWIDTH_REASON.into()
            }),
            created_at: Utc::now(),
        }
    }

    struct Bandwidth {
        payer: Identity,
        payee: Identity,
        record: BandwidthContribution,
        payments: Vec<TransferRecord>,
    }

    fn bandwidth() -> Bandwidth {
        let (payer, payee) = (Identity::ephemeral(), Identity::ephemeral());
        let payment_id = Uuid::new_v4();
        let amount = Vibe::from_micros(400_000);
        let now = Utc::now();
        let record = BandwidthContribution {
            contributor: payee.node_id().clone(),
            beneficiary: payer.node_id().clone(),
            purpose: BandwidthPurpose::LogStream,
            bytes: 400_000,
            period_start: now - Duration::seconds(3),
            period_end: now,
            amount,
            payment_id: Some(payment_id),
        };
        let payments = vec![transfer(
            incoming_transfer_id(&payer.public_key(), &payment_id),
            node_account(&payer.public_key()),
            node_account(&payee.public_key()),
            amount,
            "incoming",
        )];
        Bandwidth {
            payer,
            payee,
            record,
            payments,
        }
    }

    fn check(case: &Bandwidth) -> Result<Vibe, ContributionRefusal> {
        check_bandwidth(
            &case.record,
            &case.payer.public_key(),
            &case.payee.public_key(),
            Utc::now(),
            &case.payments,
        )
    }

    #[test]
    fn a_bandwidth_record_naming_its_payment_is_worth_the_payment() {
        let case = bandwidth();
        assert_eq!(check(&case), Ok(Vibe::from_micros(400_000)));
    }

    #[test]
    fn a_bandwidth_record_from_anyone_but_the_payer_is_refused() {
        let mut case = bandwidth();
        case.payer = Identity::ephemeral();
        assert_eq!(check(&case), Err(ContributionRefusal::WrongSigner));
        // Naming itself as beneficiary does not help: the payment is not from it.
        case.record.beneficiary = case.payer.node_id().clone();
        assert!(matches!(
            check(&case),
            Err(ContributionRefusal::UnknownPayment(_))
        ));
    }

    #[test]
    fn a_bandwidth_record_for_another_node_or_an_unknown_payment_is_refused() {
        let mut case = bandwidth();
        case.record.contributor = Identity::ephemeral().node_id().clone();
        assert_eq!(check(&case), Err(ContributionRefusal::NotForThisNode));
        let mut case = bandwidth();
        case.record.payment_id = None;
        assert_eq!(check(&case), Err(ContributionRefusal::NoPaymentNamed));
        let mut case = bandwidth();
        let other = Uuid::new_v4();
        case.record.payment_id = Some(other);
        assert_eq!(
            check(&case),
            Err(ContributionRefusal::UnknownPayment(other))
        );
        assert!(check(&case).unwrap_err().may_be_early());
        // A payment of another reason does not count.
        let mut case = bandwidth();
        case.payments[0].reason = Some("TaskExecution".into());
        assert!(matches!(
            check(&case),
            Err(ContributionRefusal::UnknownPayment(_))
        ));
    }

    #[test]
    fn a_bandwidth_record_claiming_more_than_was_paid_or_out_of_bounds_is_refused() {
        let mut case = bandwidth();
        case.record.amount = Vibe::from_whole(1_000_000);
        assert_eq!(
            check(&case),
            Err(ContributionRefusal::AmountMismatch {
                claimed: Vibe::from_whole(1_000_000),
                paid: Vibe::from_micros(400_000),
            })
        );
        let mut case = bandwidth();
        case.record.bytes = 0;
        assert!(matches!(
            check(&case),
            Err(ContributionRefusal::OutOfBounds(_))
        ));
        let mut case = bandwidth();
        case.record.period_start = case.record.period_end - Duration::days(2);
        assert!(matches!(
            check(&case),
            Err(ContributionRefusal::OutOfBounds(_))
        ));
        let mut case = bandwidth();
        case.record.period_end = Utc::now() + Duration::hours(1);
        assert!(matches!(
            check(&case),
            Err(ContributionRefusal::OutOfBounds(_))
        ));
        assert!(!check(&case).unwrap_err().may_be_early());
    }

    struct Compute {
        executor: Identity,
        record: ComputeContribution,
        releases: Vec<TransferRecord>,
    }

    fn compute() -> Compute {
        let executor = Identity::ephemeral();
        let escrow_id = Uuid::new_v4();
        let amount = Vibe::from_whole(5);
        let record = ComputeContribution {
            task_id: Uuid::new_v4(),
            contributor: executor.node_id().clone(),
            usage: ComputeUsage {
                cpu_seconds: 1.5,
                memory_gb_seconds: 0.2,
                wall_seconds: 2.0,
            },
            amount,
            escrow_id: Some(escrow_id),
        };
        let releases = vec![
            transfer(
                Uuid::new_v4(),
                node_account(&Identity::ephemeral().public_key()),
                escrow_account(&escrow_id),
                amount,
                "hold",
            ),
            transfer(
                Uuid::new_v4(),
                escrow_account(&escrow_id),
                node_account(&executor.public_key()),
                amount,
                RELEASE_KIND,
            ),
        ];
        Compute {
            executor,
            record,
            releases,
        }
    }

    fn check_run(case: &Compute, assigned: Option<&str>) -> Result<Vibe, ContributionRefusal> {
        check_compute(
            &case.record,
            &case.executor.public_key(),
            &case.releases,
            assigned,
        )
    }

    #[test]
    fn a_compute_record_naming_its_released_escrow_is_worth_the_release() {
        let case = compute();
        let assigned = case.executor.node_id().to_string();
        assert_eq!(check_run(&case, Some(&assigned)), Ok(Vibe::from_whole(5)));
    }

    #[test]
    fn a_compute_record_from_another_signer_or_for_an_unknown_task_is_refused() {
        let case = compute();
        let assigned = case.executor.node_id().to_string();
        let impostor = Identity::ephemeral();
        assert_eq!(
            check_compute(
                &case.record,
                &impostor.public_key(),
                &case.releases,
                Some(&assigned)
            ),
            Err(ContributionRefusal::WrongSigner)
        );
        assert_eq!(
            check_run(&case, None),
            Err(ContributionRefusal::UnknownTask(case.record.task_id))
        );
        assert_eq!(
            check_run(&case, Some("apn_00000000")),
            Err(ContributionRefusal::UnknownTask(case.record.task_id))
        );
        // The escrow released to someone else (or only held) is no payment to the sender.
        let mut case = compute();
        case.releases.pop();
        let assigned = case.executor.node_id().to_string();
        assert!(matches!(
            check_run(&case, Some(&assigned)),
            Err(ContributionRefusal::UnknownPayment(_))
        ));
        let mut case = compute();
        case.record.escrow_id = None;
        assert_eq!(
            check_run(&case, Some(&assigned)),
            Err(ContributionRefusal::NoPaymentNamed)
        );
    }

    #[test]
    fn a_compute_record_with_an_absurd_amount_or_usage_is_refused() {
        let mut case = compute();
        let assigned = case.executor.node_id().to_string();
        case.record.amount = Vibe::from_micros(u64::MAX);
        assert!(matches!(
            check_run(&case, Some(&assigned)),
            Err(ContributionRefusal::AmountMismatch { .. })
        ));
        for bad in [f64::NAN, -1.0, f64::INFINITY, RUN_SECONDS_MAX * 2.0] {
            let mut case = compute();
            let assigned = case.executor.node_id().to_string();
            case.record.usage.cpu_seconds = bad;
            assert_eq!(
                check_run(&case, Some(&assigned)),
                Err(ContributionRefusal::OutOfBounds("usage")),
                "{bad}"
            );
        }
        let mut case = compute();
        let assigned = case.executor.node_id().to_string();
        case.record.amount = Vibe::ZERO;
        assert!(matches!(
            check_run(&case, Some(&assigned)),
            Err(ContributionRefusal::OutOfBounds(_))
        ));
    }
}
