"""What every role process shares: the child's main and its context (process.py), its
connections (edges.py), the data-plane queues, the outbox and the publishing loop, and the
reload plan derived from the roles' declared reads.
"""
