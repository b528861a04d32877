"""Teaching through a provider's Batch API: the same completions at half the price, within 24 hours.

``ftcot teach … --batch`` (``batch: true`` for a teacher in ``ftcot run``)
sends what a normal run would send, as batches, over OpenAI's files and batch
HTTP API (``base_url`` = ``…/v1``):

1. ``POST {base_url}/files`` (multipart: ``purpose=batch``, ``file``): a JSONL
   input file, one line per request,
   ``{"custom_id", "method": "POST", "url": "/v1/completions", "body"}``; the
   body is exactly what the openai backend would post
   (:meth:`OpenAICompatTeacher.payload`, ``/v1/chat/completions`` with
   ``--chat``). A ``custom_id`` is the store key of the request's first
   completion, so every output line maps back to its store rows.
2. ``POST {base_url}/batches`` ``{input_file_id, endpoint, completion_window: "24h"}``.
3. ``GET {base_url}/batches/{id}`` every ``poll_interval_s`` until the batch
   is ``completed``, ``failed``, ``expired`` or ``cancelled`` (a progress bar
   per batch shows its request counts).
4. ``GET {base_url}/files/{output_file_id}/content`` and the same for
   ``error_file_id``: each line is ``{"custom_id", "response": {"status_code",
   "request_id", "body"}, "error"}``. A 200 body is read by the backend's
   :func:`parse_response` and stored, usage and a reasoning model's separate
   reasoning (``reasoning_content``/``reasoning``, :mod:`ftcot.teach.reasoning`)
   included, under the keys a normal run uses: a batch run and a normal run read
   and fill the same store, export the same chains under every ``--rationale``,
   and nothing stored is paid twice.

Two-stage Zero-shot-CoT is two rounds of batches: the rationales, then the
answers to the rationales that came back. A stage larger than
``max_requests`` (50,000, OpenAI's limit) or ~190 MB of input is split into
several batches, polled together.

State and resuming
------------------
Every batch is recorded in the run's ``teach.sqlite`` (tables ``batches`` and
``batch_requests``, made by this module): its requests and their store keys
before anything is uploaded, then the input file id, then ``create_sent``
before the create request goes out, then the batch id the moment it is known,
before any waiting. A run killed at any point (``kill -9`` while polling)
resumes by polling the batches it recorded, never creating them again. A batch
whose create request was sent but whose reply was lost (a kill, a timeout, a
5xx) is looked up on the server by its input file (``GET {base_url}/batches``)
and adopted; one never created is dropped from the ledger (an uploaded file
costs nothing) and its requests are built afresh. A recorded batch is collected
only from the server it was sent to: a rerun with another ``--base-url`` is
refused in one line. A batch the server no longer knows (404) is marked lost
and its requests are sent again. A normal run (without ``--batch``) refuses a
run directory with open batches: their requests are paid for already.

Failures
--------
- a line with an error (HTTP 429 or 5xx in its ``response``, in the output or
  the error file) and a request the batch left unanswered (``expired``: the
  24-hour window passed; lines missing from both files) are resubmitted alone,
  in a new batch, up to ``max_submissions`` batches per stage and run;
- a line refused for good (another 4xx), a ``failed`` batch (the server refused
  the input: its ``errors`` say why) and a ``cancelled`` one are recorded as
  failures and not resubmitted by this run; the next run asks for them again,
  as it does after a normal run's failures.

Every result that came back is stored first, whatever the batch's status.
Failure messages, errors and progress lines go through
:func:`ftcot.api_replies.redact`: the API key and the URL's credentials never
reach a log, a message or the store.

Cost
----
Priced at batch prices (:meth:`PriceTable.batch_prices`, half the list price).
``--max-cost`` reserves each request at an upper bound (prompt at 2 characters
per token, ``max_tokens × n`` completion tokens) before its batch is created;
the requests that would pass the cap are not sent, nor any after them (as in
the engine: no stage-2 answer either once the cap is reached). What the
collected completions cost counts against the cap, also those of batches a
killed run left. ``--dry-run`` counts what would be sent (requests already in
open batches are not counted again) and prices it at batch prices.
"""

from ftcot.teach.batch.client import BatchAPIError, BatchClient, LineResult, parse_output_line
from ftcot.teach.batch.ledger import BatchLedger, BatchRecord, open_batches, refuse_open_batches
from ftcot.teach.batch.run import BatchTeachSummary, batch_teacher, teach_batch

__all__ = ["BatchAPIError", "BatchClient", "BatchLedger", "BatchRecord", "BatchTeachSummary", "LineResult",
           "batch_teacher", "open_batches", "parse_output_line", "refuse_open_batches", "teach_batch"]
