//! Connect four over sigil, the game of the seed `002_…`: a referee bot that
//! is an ordinary sigil account, players in a terminal or a browser, and the
//! game's channel as its durable record (spec/GAME.md).
//!
//! [`board`] has the rules, [`referee`] the seed's states as a pure state
//! machine, [`message`] the messages players and the bot exchange in private
//! messages, [`record`] the lines posted to a game's channel and their replay,
//! [`player`] what a player sees; [`bot`] runs the referee as a sigil client
//! (`sigil game serve`), [`play`] the terminal player and the replay
//! (`sigil game play`, `sigil game replay`).

pub mod board;
pub mod bot;
pub mod message;
pub mod play;
pub mod player;
pub mod record;
pub mod referee;
