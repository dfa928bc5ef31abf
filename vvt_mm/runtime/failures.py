"""End a training or test process with a one-line error that launchers show too."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import NoReturn

__all__ = ['exit_with_error']


def exit_with_error(message: str, show: bool = True) -> NoReturn:
    """Print ``error: message`` (if ``show``) and exit with status 1.

    Under torchrun the message also goes to the worker's error file, so the
    launcher's failure summary shows it instead of "To enable traceback see
    ...". ``show=False`` lets all ranks of a job that stop for the same reason
    print it once (on rank 0) while each one still reports it to torchrun.
    """
    path = os.environ.get('TORCHELASTIC_ERROR_FILE')
    if path:
        try:
            with open(path, 'w') as f:
                json.dump({'message': {'message': message,
                                       'extraInfo': {'timestamp': str(int(time.time()))}}}, f)
        except OSError:
            pass
    if show:
        print(f'error: {message}', file=sys.stderr, flush=True)
    sys.exit(1)
