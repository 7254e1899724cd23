import sys

from kan2mcu.cli import main

sys.exit(main())
