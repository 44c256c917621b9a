"""validate: for supervisor program files: parse FILE the way supervisord will, exit non-zero with its error.

supervisord has no config test flag, and one bad program file (a stray %, an unknown option) stops it from
starting every program. Usage: python3 supervisor_validate.py FILE (supervisor's own library, system Python).
"""
import os
import sys
import tempfile

from supervisor.options import ServerOptions


def main(path):
    with tempfile.TemporaryDirectory() as tmp:
        main_conf = os.path.join(tmp, "supervisord.conf")
        with open(main_conf, "w") as handle:
            handle.write("[supervisord]\nlogfile=%s/log\npidfile=%s/pid\n[include]\nfiles=%s\n"
                         % (tmp, tmp, os.path.abspath(path)))
        options = ServerOptions()
        options.realize(args=["-c", main_conf])  # prints the error and exits 2 on a bad file
        if not options.process_group_configs:
            sys.exit("%s defines no program" % path)


if __name__ == "__main__":
    main(sys.argv[1])
