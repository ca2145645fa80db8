"""Print where the Airflow UI of ``make airflow-ui`` is and how to log in (before it starts).

``airflow standalone`` uses Airflow 3's SimpleAuthManager: the users are
``[core] simple_auth_manager_users`` (default ``admin:admin``, user ``admin`` with the
admin role) and their generated passwords live in
``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated`` (or
``[core] simple_auth_manager_passwords_file``). This makes the missing passwords now,
the way the API server would on its first start, and prints them, so the login is on
the screen before standalone's own output scrolls it away.

Usage: python scripts/airflow_ui_login.py URL
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings


def main(url: str) -> int:
    warnings.simplefilter("ignore")  # import-time deprecation chatter of Airflow's dependencies
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.configuration import conf

    print(f"Airflow UI: {url}  (up once the log below says 'Airflow is ready'; Ctrl-C stops it)")
    if conf.getboolean("core", "simple_auth_manager_all_admins"):
        print("login: none (simple_auth_manager_all_admins is set: everyone is admin)")
        return 0
    with contextlib.redirect_stdout(io.StringIO()):  # it prints each new password itself
        SimpleAuthManager().init()
    password_file = SimpleAuthManager.get_generated_password_file()
    with open(password_file) as stream:
        passwords = json.load(stream)
    for user in SimpleAuthManager.get_users():
        print(f"login: user {user.username!r} ({user.role}), password {passwords.get(user.username)!r}")
    print(f"       (passwords kept in {password_file}; REST API tokens: POST {url}/auth/token)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8080"))
