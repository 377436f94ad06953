//! Sensing: per-tick samples built from kernel aggregates — nft counters, sampled NFLOG
//! packets and conntrack — in fixed-size structures that allocate nothing once running.
