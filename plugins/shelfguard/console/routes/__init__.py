"""One router per resource: runs, approvals, the champion, batches."""
