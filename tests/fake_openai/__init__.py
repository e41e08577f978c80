"""Old name of rag.measure.fake_openai, kept so `from tests.fake_openai import ...` still works.

The fake server moved into the package because `rag bench load` starts it; the installed app
must not depend on the test tree.
"""

import sys

from rag.measure import fake_openai

sys.modules[__name__] = fake_openai
