from braincam.cli import main

main()
