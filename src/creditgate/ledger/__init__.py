"""The credit ledger: lots, postings, holds, settlement with group commit, and expiry.

`service.BillingService` is the one object the rest of the gateway talks to.
"""
