//! Leader election: `CH_LEAD` opens a [`Ballot`] among the members online at
//! that moment, the vote requests go out once its number is durable, and a
//! strict majority of those voters elects the candidate. The `Ballot` only
//! counts; the channel decides who may call and what the result tells whom.

use std::collections::BTreeSet;

use ulid::Ulid;

use super::{err, Channel, ChannelEffect, StoreOp};
use sigil_proto::event::{ChElected, ChMsgAck, ChVoteRequest, Outbound};
use sigil_proto::quorum::is_majority;
use sigil_proto::{ErrorCode, ProtoError};

/// Largest step from one election number to the next: keeps one member from
/// using up the number space (and so all future elections) with one CH_LEAD.
pub const MAX_ELECTION_STEP: u64 = 1 << 32;

/// One election: who may vote, who did, and how far it got.
#[derive(Debug, Clone)]
pub(super) struct Ballot {
    election: u64,
    candidate: Ulid,
    voters: BTreeSet<Ulid>,
    votes: BTreeSet<Ulid>,
    /// The election number is durable and the vote requests went out.
    started: bool,
    elected: bool,
}

impl Ballot {
    /// A ballot for `candidate` among `voters`; the candidate votes for itself.
    pub(super) fn new(election: u64, candidate: Ulid, voters: BTreeSet<Ulid>) -> Self {
        Self { election, candidate, voters, votes: BTreeSet::from([candidate]), started: false, elected: false }
    }

    pub(super) fn election(&self) -> u64 {
        self.election
    }

    pub(super) fn candidate(&self) -> Ulid {
        self.candidate
    }

    /// Who was online at `CH_LEAD`.
    pub(super) fn voters(&self) -> &BTreeSet<Ulid> {
        &self.voters
    }

    pub(super) fn is_elected(&self) -> bool {
        self.elected
    }

    /// True when this is election `election` and its vote requests went out.
    pub(super) fn is_running(&self, election: u64) -> bool {
        self.election == election && self.started
    }

    /// The store made election numbers up to `stored_election` durable:
    /// true the one time that lets this ballot start.
    pub(super) fn start(&mut self, stored_election: u64) -> bool {
        if self.started || self.election > stored_election {
            return false;
        }
        self.started = true;
        true
    }

    /// Records `voter`'s vote for `candidate`. A late vote, once elected, is
    /// accepted and ignored: a majority was enough.
    pub(super) fn vote(&mut self, voter: Ulid, candidate: Ulid) -> Result<(), ProtoError> {
        if self.candidate != candidate {
            return Err(err(ErrorCode::BadElection, "that user is not this election's candidate"));
        }
        if self.elected {
            return Ok(());
        }
        if !self.voters.contains(&voter) {
            return Err(err(ErrorCode::BadElection, "you were not online when this election started"));
        }
        if !self.votes.insert(voter) {
            return Err(err(ErrorCode::AlreadyVoted, "you already voted in this election"));
        }
        Ok(())
    }

    /// A strict majority of the voters voted for the candidate.
    pub(super) fn has_majority(&self) -> bool {
        is_majority(self.votes.len(), self.voters.len())
    }

    /// Marks the candidate elected on a majority: true the one time it happens.
    pub(super) fn elect(&mut self) -> bool {
        if self.elected || !self.has_majority() {
            return false;
        }
        self.elected = true;
        true
    }
}

impl Channel {
    /// `CH_LEAD {election}` from a member.
    pub fn lead(&mut self, user: Ulid, election: u64, out: &mut Vec<ChannelEffect>) -> Result<(), ProtoError> {
        if !self.members.contains(&user) {
            return Err(err(ErrorCode::NotMember, "you are not a member of this channel"));
        }
        if self.leader.is_some() {
            return Err(err(ErrorCode::BadElection, "the channel has a leader"));
        }
        if election <= self.election || election - self.election > MAX_ELECTION_STEP {
            return Err(ProtoError::new(
                ErrorCode::BadElection,
                format!("election must be greater than the current {} by at most 2^32", self.election),
            ));
        }
        self.election = election;
        // Like Raft's term, the number is stored before the election starts:
        // after a crash it must never be reused by a second election.
        out.push(ChannelEffect::Store(StoreOp::SetElection { channel: self.id, election }));
        self.ballot = Some(Ballot::new(election, user, self.online.clone()));
        Ok(())
    }

    /// The election number is durable: ask for votes.
    pub(super) fn start_ballot(&mut self, stored_election: u64, out: &mut Vec<ChannelEffect>) {
        let Some(b) = self.ballot.as_mut() else { return };
        if !b.start(stored_election) {
            return;
        }
        // The voters are who was online at CH_LEAD; ask those still online.
        let frame = Outbound::event(&ChVoteRequest { channel: self.id, election: b.election(), user: b.candidate() });
        for &to in b.voters().intersection(&self.online) {
            out.push(ChannelEffect::Send { to, frame: frame.clone() });
        }
        self.tally(out);
    }

    /// `CH_VOTE {election, user: candidate}` from `voter`.
    pub fn vote(
        &mut self,
        voter: Ulid,
        election: u64,
        candidate: Ulid,
        out: &mut Vec<ChannelEffect>,
    ) -> Result<(), ProtoError> {
        if !self.members.contains(&voter) {
            return Err(err(ErrorCode::NotMember, "you are not a member of this channel"));
        }
        let Some(ballot) = self.ballot.as_mut().filter(|b| b.is_running(election)) else {
            return Err(err(ErrorCode::BadElection, "no such election is running"));
        };
        ballot.vote(voter, candidate)?;
        self.tally(out);
        Ok(())
    }

    /// Elects the candidate once it has a majority, once.
    fn tally(&mut self, out: &mut Vec<ChannelEffect>) {
        let Some(ballot) = self.ballot.as_mut() else { return };
        if !ballot.elect() {
            return;
        }
        let (leader, election) = (ballot.candidate(), ballot.election());
        self.leader = Some(leader);
        self.to_online(&Outbound::event(&ChElected { channel: self.id, election, leader }), out);
        self.status_if_changed(out);
        // The new leader learns every ack recorded so far, so it can commit:
        // one frame per pending message, so the replay cannot flood its queue.
        for (msg_id, p) in &self.pending {
            let users: Vec<Ulid> = p.acks.iter().copied().filter(|&u| u != p.from).collect();
            if let Some(&user) = users.first() {
                let frame = Outbound::event(&ChMsgAck { id: *msg_id, user, users, ids: Vec::new() });
                out.push(ChannelEffect::Send { to: leader, frame });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::RangeInclusive<u128>) -> BTreeSet<Ulid> {
        range.map(Ulid::from).collect()
    }

    #[test]
    fn the_candidate_votes_for_itself_and_a_strict_majority_elects_once() {
        let u = |n: u128| Ulid::from(n);
        let mut b = Ballot::new(1, u(1), ids(1..=4));
        assert!(!b.has_majority() && !b.elect(), "1 of 4");
        b.vote(u(2), u(1)).unwrap();
        assert!(!b.has_majority(), "2 of 4 is not a strict majority");
        b.vote(u(3), u(1)).unwrap();
        assert!(b.has_majority());
        assert!(b.elect() && b.is_elected());
        assert!(!b.elect(), "elected only once");
        // A late vote is accepted and changes nothing, even from a non-voter.
        b.vote(u(4), u(1)).unwrap();
        b.vote(u(9), u(1)).unwrap();
        assert!(!b.elect());
    }

    #[test]
    fn only_voters_vote_once_and_only_for_the_candidate() {
        let u = |n: u128| Ulid::from(n);
        let mut b = Ballot::new(1, u(1), ids(1..=3));
        assert_eq!(b.vote(u(2), u(3)).unwrap_err().code, ErrorCode::BadElection, "not the candidate");
        assert_eq!(b.vote(u(9), u(1)).unwrap_err().code, ErrorCode::BadElection, "not a voter");
        assert_eq!(b.vote(u(1), u(1)).unwrap_err().code, ErrorCode::AlreadyVoted, "the candidate already did");
        b.vote(u(2), u(1)).unwrap();
        assert_eq!(b.vote(u(2), u(1)).unwrap_err().code, ErrorCode::AlreadyVoted);
    }

    #[test]
    fn a_ballot_starts_once_when_its_number_is_durable() {
        let mut b = Ballot::new(5, Ulid::from(1u128), ids(1..=1));
        assert!(!b.start(4) && !b.is_running(5), "number not durable yet");
        assert!(b.start(7), "a later durable number covers it");
        assert!(b.is_running(5) && !b.is_running(4));
        assert!(!b.start(9), "starts only once");
    }

    #[test]
    fn a_lone_candidate_is_elected_when_its_ballot_starts() {
        let u = Ulid::from(1u128);
        let mut b = Ballot::new(1, u, BTreeSet::from([u]));
        assert!(b.has_majority());
        assert!(b.start(1) && b.elect());
    }
}
